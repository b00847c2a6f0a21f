"""Handlers of the events the group service consumes (run by EventConsumer, each inside the
transaction that records the event in the inbox).

* payment.succeeded → the member's share is secured (`member.paid`); when every required share
  is, OPEN → PENDING with `group.fully_paid` and `group.finalized`. The group row is locked
  (``FOR UPDATE``) for the whole handler, so four payments handled concurrently by two
  replicas serialize and exactly one of them sees the group become fully paid. A payment the
  group must not keep (group no longer OPEN, superseded attempt, share already covered) is
  queued for release: the void worker calls VoidPayment / RefundPayment.
* payment.failed → the member's current attempt failed; they may RetryPayment.
* order.confirmed → PENDING → CONFIRMED (`group.confirmed`).
* order.failed → PENDING → CANCELLED (`group.cancelled`, listing the payments to release).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from group_svc.adapters.repository import GroupRepository
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import PaymentOutcome
from group_svc.service_layer import events
from group_svc.service_layer.unit_of_work import Deps
from mppo.order.v1 import order_events_pb2
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.event_types import decode_event
from mppo.platform.events import Event
from mppo.platform.logs import bind_ids
from mppo.platform.outbox import add_to_outbox

logger = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Event], Awaitable[None]]


def payment_handler(deps: Deps) -> Handler:
    """The handler of payment.succeeded and payment.failed."""

    async def handle(session: AsyncSession, event: Event) -> None:
        message = decode_event(event)
        if isinstance(message, payment_events_pb2.PaymentSucceeded):
            await payment_succeeded(session, deps, message)
        elif isinstance(message, payment_events_pb2.PaymentFailed):
            await payment_failed(session, deps, message)

    return handle


def order_handler(deps: Deps) -> Handler:
    """The handler of order.confirmed and order.failed."""

    async def handle(session: AsyncSession, event: Event) -> None:
        message = decode_event(event)
        if isinstance(message, order_events_pb2.OrderConfirmed):
            await order_confirmed(session, deps, message)
        elif isinstance(message, order_events_pb2.OrderFailed):
            await order_failed(session, deps, message)

    return handle


async def payment_succeeded(
    session: AsyncSession, deps: Deps, msg: payment_events_pb2.PaymentSucceeded
) -> None:
    """Count a secured payment; finalize the group when it was the last one needed."""
    with bind_ids(group_id=msg.group_id, member_id=msg.member_id, payment_id=msg.payment_id):
        repo = GroupRepository(session, deps.keyring)
        group = await repo.get(msg.group_id, lock=True)
        if group is None:
            logger.warning("payment.succeeded for an unknown group; ignored")
            return
        now = deps.clock()
        outcome = group.payment_succeeded(
            msg.payment_id,
            msg.member_id,
            msg.attempt,
            msg.amount.amount_minor,
            msg.captured,
            now,
        )
        if outcome is PaymentOutcome.DUPLICATE:
            return
        if outcome is PaymentOutcome.REJECTED:
            logger.warning("payment not kept (group %s): queued for release", group.status.value)
            await repo.save(group)
            await repo.enqueue_void(
                group.group_id,
                msg.payment_id,
                msg.captured,
                f"group {group.status.value.lower()}: payment not needed",
                now,
            )
            return
        member = group.member(msg.member_id)
        emitted = [events.member_paid(group, member, msg.payment_id, msg.amount.amount_minor)]
        if group.mark_pending(now):
            emitted += [events.fully_paid(group), events.finalized(group)]
            logger.info("group fully paid; finalized")
        await repo.save(group)
        for event in emitted:
            await add_to_outbox(session, event)


async def payment_failed(
    session: AsyncSession, deps: Deps, msg: payment_events_pb2.PaymentFailed
) -> None:
    """Mark the attempt failed."""
    with bind_ids(group_id=msg.group_id, member_id=msg.member_id, payment_id=msg.payment_id):
        repo = GroupRepository(session, deps.keyring)
        group = await repo.get(msg.group_id, lock=True)
        if group is None:
            logger.warning("payment.failed for an unknown group; ignored")
            return
        if group.payment_failed(msg.payment_id, msg.member_id, msg.attempt, deps.clock()):
            logger.info("member's payment failed: %s", msg.reason)
        await repo.save(group)


async def order_confirmed(
    session: AsyncSession, deps: Deps, msg: order_events_pb2.OrderConfirmed
) -> None:
    """PENDING → CONFIRMED."""
    with bind_ids(group_id=msg.group_id, order_id=msg.order_id):
        repo = GroupRepository(session, deps.keyring)
        group = await repo.get(msg.group_id, lock=True)
        if group is None or group.status is not GroupStatus.PENDING:
            state = group.status.value if group else "unknown"
            logger.error("order.confirmed for a group in %s; nothing changed", state)
            return
        group.confirm(msg.order_id, deps.clock())
        await repo.save(group)
        await add_to_outbox(session, events.confirmed(group))


async def order_failed(
    session: AsyncSession, deps: Deps, msg: order_events_pb2.OrderFailed
) -> None:
    """PENDING → CANCELLED; the payment service releases the holds of a cancelled group."""
    with bind_ids(group_id=msg.group_id, order_id=msg.order_id):
        repo = GroupRepository(session, deps.keyring)
        group = await repo.get(msg.group_id, lock=True)
        if group is None or group.status is not GroupStatus.PENDING:
            state = group.status.value if group else "unknown"
            logger.error("order.failed for a group in %s; nothing changed", state)
            return
        group.order_id = msg.order_id
        group.cancel(f"order failed: {msg.detail or 'not placed'}", "system:orders", deps.clock())
        await repo.save(group)
        await add_to_outbox(session, events.cancelled(group, "system:orders"))
