"""Wiring of the group service: `build(infra)` connects the parts once; nothing at import time."""

from __future__ import annotations

import functools
from pathlib import Path

from group_svc.adapters.cache import GroupCache
from group_svc.adapters.pii import PiiKeyring
from group_svc.config import GroupSettings
from group_svc.entrypoints.expiry_scheduler import ExpiryScheduler
from group_svc.entrypoints.grpc_servicer import GroupServiceServicer
from group_svc.service_layer.handlers import GroupHandlers, utcnow
from group_svc.service_layer.unit_of_work import GroupUnitOfWork
from mppo.clients.order import OrderClient
from mppo.clients.payment import PaymentClient
from mppo.group.v1 import group_service_pb2, group_service_pb2_grpc
from mppo.order.v1 import order_events_pb2
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.db import create_sessionmaker
from mppo.platform.inbox import EventConsumer
from mppo.platform.providers import ProviderChoice
from mppo.platform.runtime import Infra, Parts, Servicer, ServiceSpec
from mppo.platform.worker import Worker

SERVICE_NAME = group_service_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Core:
    """What every group process shares: settings, units of work, handlers, the payment and
    order clients."""

    def __init__(self, infra: Infra) -> None:
        self.settings = GroupSettings.from_env()
        keyring = PiiKeyring.from_env()
        prefix = infra.config.infra.nats_prefix
        self.cache = GroupCache(infra.redis, keyring, f"mppo:{prefix}:" if prefix else "mppo:")
        self.payments = PaymentClient(
            self.settings.payment_addr, "group", timeout=self.settings.payment_timeout
        )
        self.orders = OrderClient(
            self.settings.order_addr, "group", timeout=self.settings.order_timeout
        )
        self.uow = functools.partial(GroupUnitOfWork, create_sessionmaker(infra.engine), keyring)
        self.handlers = GroupHandlers(
            payments=self.payments,
            orders=self.orders,
            host_grace=self.settings.host_grace,
            reminder_lead=self.settings.reminder_lead,
            hold_margin=self.settings.hold_margin,
            default_deadline=self.settings.default_deadline,
            cache=self.cache,
            clock=utcnow,
            providers=ProviderChoice.from_env(),
        )

    async def close(self) -> None:
        """Close the clients."""
        await self.payments.close()
        await self.orders.close()

    def scheduler(self) -> ExpiryScheduler:
        """The expiry scheduler over these parts."""
        return ExpiryScheduler(
            self.handlers, self.uow, poll_interval=self.settings.scheduler_interval
        )


def build(infra: Infra) -> Parts:
    """The servicer, the durable consumers and (unless MPPO_GROUP_SCHEDULER=off) the scheduler."""
    core = Core(infra)
    h = core.handlers
    prefix = infra.config.infra.nats_prefix
    workers: list[Worker] = [
        EventConsumer(
            infra.js,
            uow=core.uow,
            durable="group-payments",
            stream="MPPO_PAYMENT",
            handlers={
                payment_events_pb2.PaymentSucceeded: h.payment_succeeded,
                payment_events_pb2.PaymentFailed: h.payment_failed,
                payment_events_pb2.AuthorizationExpiring: h.authorization_expiring,
            },
            prefix=prefix,
        ),
        EventConsumer(
            infra.js,
            uow=core.uow,
            durable="group-orders",
            stream="MPPO_ORDER",
            handlers={
                order_events_pb2.OrderConfirmed: h.order_confirmed,
                order_events_pb2.OrderFailed: h.order_failed,
            },
            prefix=prefix,
        ),
    ]
    if core.settings.scheduler_enabled:
        scheduler = core.scheduler()
        h.wake_when_due(scheduler.wake)
        workers.append(scheduler)
    servicer = GroupServiceServicer(h, core.uow, core.cache, utcnow)
    return Parts(
        servicers=[Servicer(group_service_pb2_grpc.add_GroupServiceServicer_to_server, servicer)],
        workers=workers,
        close=core.close,
    )


SPEC = ServiceSpec(
    name="group",
    grpc_services=[SERVICE_NAME],
    migrations=MIGRATIONS,
    build=build,
    # members' decrypted e-mail and phone: only the notification service may ask
    service_only={"GetGroupContacts": frozenset({"notification"})},
)
