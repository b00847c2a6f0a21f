"""Events the payment service consumes: a group that expired or was cancelled, or an order
that failed, means every hold of that group is voided and every capture refunded.

The handler (:meth:`PaymentHandlers.group_closed`) only records that durably, in the inbox
transaction: the group is closed and its payments are due for compensation now. The
reconciler, woken once that transaction committed, then talks to the providers, so a slow
provider never holds a consumer transaction open, and a payment that becomes authorized after
the group closed is still released.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext

from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2
from mppo.platform.inbox import EventConsumer
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork


def build_consumers(
    js: JetStreamContext,
    uow: Callable[[], PaymentUnitOfWork],
    handlers: PaymentHandlers,
    prefix: str,
) -> list[EventConsumer]:
    """The durable consumers on MPPO_GROUP and MPPO_ORDER."""
    return [
        EventConsumer(
            js,
            uow=uow,
            durable="payment-groups",
            stream="MPPO_GROUP",
            handlers={
                group_events_pb2.GroupExpired: handlers.group_closed,
                group_events_pb2.GroupCancelled: handlers.group_closed,
            },
            prefix=prefix,
        ),
        EventConsumer(
            js,
            uow=uow,
            durable="payment-orders",
            stream="MPPO_ORDER",
            handlers={order_events_pb2.OrderFailed: handlers.group_closed},
            prefix=prefix,
        ),
    ]
