"""Wiring of the group service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from group_svc.adapters.cache import GroupCache
from group_svc.adapters.payment_client import PaymentClient
from group_svc.adapters.pii import PiiKeyring
from group_svc.config import GroupSettings
from group_svc.entrypoints.grpc_servicer import GroupServiceServicer
from group_svc.service_layer.event_handlers import order_handler, payment_handler
from group_svc.service_layer.scheduler import ExpiryScheduler
from group_svc.service_layer.unit_of_work import Deps
from mppo.group.v1 import group_service_pb2, group_service_pb2_grpc
from mppo.platform.db import create_sessionmaker
from mppo.platform.inbox import EventConsumer
from mppo.platform.runtime import Infra, ServiceSpec, Worker

SERVICE_NAME = group_service_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_deps: dict[int, Deps] = {}


def build_deps(infra: Infra) -> Deps:
    """The handlers' dependencies for this process's connections (built once per Infra)."""
    if id(infra) not in _deps:
        settings = GroupSettings.from_env()
        keyring = PiiKeyring.from_env()
        prefix = infra.config.infra.nats_prefix
        _deps[id(infra)] = Deps(
            sessions=create_sessionmaker(infra.engine),
            keyring=keyring,
            payments=PaymentClient(settings.payment_addr, settings.payment_timeout),
            cache=GroupCache(infra.redis, keyring, f"mppo:{prefix}:" if prefix else "mppo:"),
            settings=settings,
        )
    return _deps[id(infra)]


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the group service's servicers to `server`."""
    group_service_pb2_grpc.add_GroupServiceServicer_to_server(
        GroupServiceServicer(build_deps(infra)), server
    )


def consumers(infra: Infra, deps: Deps) -> list[Worker]:
    """The durable consumers shared by every replica."""
    prefix = infra.config.infra.nats_prefix
    return [
        EventConsumer(
            infra.engine,
            infra.js,
            durable="group-payments",
            stream="MPPO_PAYMENT",
            filter_subjects=["payment.succeeded", "payment.failed"],
            handler=payment_handler(deps),
            prefix=prefix,
        ),
        EventConsumer(
            infra.engine,
            infra.js,
            durable="group-orders",
            stream="MPPO_ORDER",
            filter_subjects=["order.confirmed", "order.failed"],
            handler=order_handler(deps),
            prefix=prefix,
        ),
    ]


def workers(infra: Infra) -> Sequence[Worker]:
    """Consumers, and the expiry scheduler unless MPPO_GROUP_SCHEDULER=off."""
    deps = build_deps(infra)
    found = consumers(infra, deps)
    if deps.settings.scheduler_enabled:
        found.append(ExpiryScheduler(deps))
    return found


SPEC = ServiceSpec(
    name="group",
    grpc_services=[SERVICE_NAME],
    migrations=MIGRATIONS,
    register=register,
    workers=workers,
)
