"""Wiring of the payment service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from mppo.clients.group import GroupClient
from mppo.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.db import create_sessionmaker
from mppo.platform.retention import PruneTarget
from mppo.platform.runtime import Infra, Parts, Servicer, ServiceSpec
from payment_svc.adapters.cache import IntentCache
from payment_svc.adapters.providers.registry import build_providers, close_providers
from payment_svc.entrypoints.consumers import build_consumers
from payment_svc.entrypoints.grpc_servicer import PaymentServiceServicer
from payment_svc.entrypoints.reconciler import Reconciler
from payment_svc.observability import holds_sample
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork
from payment_svc.settings import PaymentSettings

SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name

#: who may call what (any other caller, end users included, gets PERMISSION_DENIED before the
#: handler runs). GetPayment and ListPayments are open: they check group membership themselves.
SERVICE_ONLY: dict[str, frozenset[str]] = {
    # the group service opens a member's payment (mppo.clients.payment.create_intent)
    "CreatePaymentIntent": frozenset({"group"}),
    # the order saga captures once the merchant accepted the order
    "CapturePayment": frozenset({"order"}),
    # the group service releases money of a closed group, the order saga of a failed order
    "VoidPayment": frozenset({"group", "order"}),
    # the group service closes the payment links of shares it no longer wants
    "CloseCheckout": frozenset({"group"}),
    "RefundPayment": frozenset({"group", "order"}),
    # a re-read from the provider: no service calls it today (the reconciler re-reads in
    # process), so it is kept to those that move money on a payment
    "SyncPayment": frozenset({"group", "order"}),
    # provider webhooks arrive through the gateway only (their signature is checked here)
    "HandleWebhook": frozenset({"gateway"}),
}


def build(infra: Infra) -> Parts:
    """The servicer, the event consumers and the reconciler, over one set of handlers."""
    settings = PaymentSettings.from_env()
    retention = infra.config.infra.retention
    uow = partial(PaymentUnitOfWork, create_sessionmaker(infra.engine))
    providers = build_providers(settings)
    groups = GroupClient(settings.group_addr, "payment")

    def compensation_due() -> None:
        reconciler.wake()

    handlers = PaymentHandlers(
        providers,
        settings,
        groups,
        cache=IntentCache(infra.redis, prefix=infra.config.infra.nats_prefix),
        compensation_due=compensation_due,
    )
    reconciler = Reconciler(handlers, uow)

    async def close() -> None:
        await close_providers(providers)
        await groups.close()

    return Parts(
        servicers=[
            Servicer(
                payment_service_pb2_grpc.add_PaymentServiceServicer_to_server,
                PaymentServiceServicer(handlers, uow),
            )
        ],
        workers=[
            *build_consumers(infra.js, uow, handlers, infra.config.infra.nats_prefix),
            reconciler,
        ],
        close=close,
        # provider webhook records: kept as long as reconciliation and disputes need them
        prune=[PruneTarget("webhook_events", "received_at", retention.webhooks)],
        # money held on payers' cards, read with the platform's gauges (MppoHoldNearExpiry)
        samples={"payment holds": holds_sample(infra.engine)},
    )


SPEC = ServiceSpec(
    name="payment",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    build=build,
    service_only=SERVICE_ONLY,
)
