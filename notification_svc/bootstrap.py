"""Wiring of the notification service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import grpc

from mppo.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from mppo.platform.config import service_addr
from mppo.platform.db import create_sessionmaker
from mppo.platform.membership import GroupAccess
from mppo.platform.runtime import Infra, ServiceSpec, Worker
from notification_svc.adapters.contacts import GrpcContactDirectory
from notification_svc.adapters.mailer import SmtpMailer
from notification_svc.adapters.webhook import WebhookPoster
from notification_svc.config import NotificationConfig
from notification_svc.entrypoints.consumers import build_consumers
from notification_svc.entrypoints.grpc_servicer import NotificationServiceServicer
from notification_svc.service_layer.handlers import GroupEventHandler
from notification_svc.service_layer.sender import Sender, SenderPolicy

SERVICE_NAME = notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


def _config(infra: Infra) -> NotificationConfig:
    config = infra.config
    if not isinstance(config, NotificationConfig):
        raise TypeError("the notification service runs with NotificationConfig (load_config)")
    return config


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the notification service's servicers to `server`."""
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationServiceServicer(
            create_sessionmaker(infra.engine),
            GroupAccess(service_addr(os.environ, "group"), "notification"),
        ),
        server,
    )


def workers(infra: Infra) -> Sequence[Worker]:
    """The event consumers and the sender."""
    config = _config(infra)
    contacts = GrpcContactDirectory(config.group_addr)
    mailer = SmtpMailer(
        smtp_addr=config.smtp_addr,
        sink_addr=config.smtp_sink_addr,
        mail_from=config.mail_from,
        timeout=config.send_timeout_seconds,
    )
    poster = (
        WebhookPoster(
            url=config.webhook_url,
            secret=config.webhook_secret,
            timeout=config.send_timeout_seconds,
        )
        if config.webhook_enabled
        else None
    )
    sender = Sender(
        infra.engine,
        contacts,
        mailer,
        poster,
        SenderPolicy(
            max_attempts=config.max_attempts,
            retry_base_seconds=config.retry_base_seconds,
            retry_max_seconds=config.retry_max_seconds,
            poll_seconds=config.poll_seconds,
            settle_seconds=config.settle_seconds,
        ),
    )
    handler = GroupEventHandler(
        contacts, webhook_enabled=config.webhook_enabled, on_created=sender.wake
    )
    return [*build_consumers(infra, handler), sender]


SPEC = ServiceSpec(
    name="notification",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
    workers=workers,
)
