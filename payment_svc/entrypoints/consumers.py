"""Events the payment service consumes: a group that expired or was cancelled, or an order
that failed, means every hold of that group is voided and every capture refunded.

The handler only records that durably (in the inbox transaction): the group is closed and its
payments are due for compensation now. The reconciler then talks to the providers, so a slow
provider never holds a consumer transaction open, and a payment that becomes authorized after
the group closed is still released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2
from mppo.platform.event_types import decode_event
from mppo.platform.events import Event
from mppo.platform.inbox import EventConsumer, Handler
from mppo.platform.logs import bind_ids
from payment_svc.adapters.repository import PaymentRepository
from payment_svc.adapters.tables import payments

logger = logging.getLogger(__name__)

GROUP_SUBJECTS = ("group.expired", "group.cancelled")
ORDER_SUBJECTS = ("order.failed",)


def make_handler(wake: Callable[[], None]) -> Handler:
    """The inbox handler; ``wake`` nudges the reconciler once the transaction committed."""

    async def handle(session: AsyncSession, event: Event) -> None:
        message = decode_event(event)
        if isinstance(message, (group_events_pb2.GroupExpired, group_events_pb2.GroupCancelled)):
            group_id, ids, why = message.group_id, list(message.payment_ids), message.reason
        elif isinstance(message, order_events_pb2.OrderFailed):
            group_id, ids, why = message.group_id, list(message.payment_ids), message.detail
        else:
            logger.info("ignoring %s", event.event_type)
            return
        reason = f"{event.event_type}: {why}" if why else event.event_type
        with bind_ids(group_id=group_id):
            repo = PaymentRepository(session)
            await repo.close_group(group_id, reason)
            if ids:
                await session.execute(
                    update(payments)
                    .where(payments.c.payment_id.in_(ids), payments.c.compensate_reason == "")
                    .values(compensate_reason=reason)
                )
            logger.info("group closed (%s): holds will be voided, captures refunded", reason)
        asyncio.get_running_loop().call_later(0.2, wake)

    return handle


def build_consumers(
    engine: AsyncEngine, js: JetStreamContext, prefix: str, wake: Callable[[], None]
) -> list[EventConsumer]:
    """The durable consumers on MPPO_GROUP and MPPO_ORDER."""
    handler = make_handler(wake)
    return [
        EventConsumer(
            engine,
            js,
            durable="payment-groups",
            stream="MPPO_GROUP",
            filter_subjects=list(GROUP_SUBJECTS),
            handler=handler,
            prefix=prefix,
        ),
        EventConsumer(
            engine,
            js,
            durable="payment-orders",
            stream="MPPO_ORDER",
            filter_subjects=list(ORDER_SUBJECTS),
            handler=handler,
            prefix=prefix,
        ),
    ]
