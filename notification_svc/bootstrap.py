"""Wiring of the notification service: `build(infra)` connects the parts once per process."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mppo.clients.group import GroupClient
from mppo.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from mppo.platform.db import create_sessionmaker
from mppo.platform.runtime import Infra, Parts, Servicer, ServiceSpec
from notification_svc.adapters.contacts import GrpcContactDirectory
from notification_svc.adapters.mailer import SmtpMailer
from notification_svc.adapters.page_links import GrpcPageLinks
from notification_svc.adapters.webhook import WebhookPoster
from notification_svc.config import NotificationConfig
from notification_svc.entrypoints.consumers import build_consumers
from notification_svc.entrypoints.grpc_servicer import NotificationServiceServicer
from notification_svc.service_layer.handlers import GroupEventHandlers, list_notifications
from notification_svc.service_layer.sender import Sender, SenderPolicy
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

SERVICE_NAME = notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


def sender_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions in autocommit for the sender, whose every unit of work is one statement
    (claim a batch, read a member's payment facts, record a round): each is its own
    transaction, without the BEGIN and COMMIT round trips around it."""
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


def build(infra: Infra) -> Parts:
    """The servicer, the event consumers and the sender, sharing one group-service client."""
    config = infra.config
    if not isinstance(config, NotificationConfig):
        raise TypeError("the notification service runs with NotificationConfig (load_config)")
    sessions = create_sessionmaker(infra.engine)
    autocommit = sender_sessions(infra.engine)

    def uow() -> NotificationUnitOfWork:
        return NotificationUnitOfWork(sessions)

    def sender_uow() -> NotificationUnitOfWork:
        return NotificationUnitOfWork(autocommit)

    groups = GroupClient(config.group_addr, "notification")
    contacts = GrpcContactDirectory(groups)
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
        sender_uow,
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
        page_links=GrpcPageLinks(config.group_page_url, groups) if config.group_page_url else None,
    )
    group_events = GroupEventHandlers(
        contacts, webhook_enabled=config.webhook_enabled, wake=sender.wake
    )
    consumers = build_consumers(
        infra.js, uow, prefix=config.infra.nats_prefix, group_handlers=group_events.handlers()
    )
    servicer = NotificationServiceServicer(uow, partial(list_notifications, groups=groups))

    async def close() -> None:
        await mailer.close()
        await contacts.close()
        if poster is not None:
            await poster.close()
        await groups.close()

    return Parts(
        servicers=[
            Servicer(
                notification_service_pb2_grpc.add_NotificationServiceServicer_to_server, servicer
            )
        ],
        workers=[*consumers, sender],
        close=close,
    )


SPEC = ServiceSpec(
    name="notification",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    build=build,
)
