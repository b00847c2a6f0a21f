"""The order service's event consumer: `group.finalized` becomes an order (once per group).

The consumer records each event in the inbox and runs the handler in one unit of work
(:mod:`mppo.platform.inbox`); the handler itself is in service_layer/handlers.py.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext

from mppo.group.v1 import group_events_pb2
from mppo.platform.inbox import EventConsumer
from order_svc.service_layer.handlers import OrderHandlers
from order_svc.service_layer.unit_of_work import OrderUnitOfWork

DURABLE = "order-groups"
STREAM = "MPPO_GROUP"


def group_consumer(
    js: JetStreamContext,
    uow: Callable[[], OrderUnitOfWork],
    handlers: OrderHandlers,
    *,
    prefix: str = "",
) -> EventConsumer:
    """The durable consumer of `group.finalized` (replicas share it)."""
    return EventConsumer(
        js,
        uow=uow,
        durable=DURABLE,
        stream=STREAM,
        handlers={group_events_pb2.GroupFinalized: handlers.group_finalized},
        prefix=prefix,
    )
