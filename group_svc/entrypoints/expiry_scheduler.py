"""The expiry scheduler: deadlines, host fallback, reminders and releasing unwanted payments.

Safe in every replica at once: each round claims due rows with ``SELECT … FOR UPDATE SKIP
LOCKED`` and re-checks them under the lock, so one group expires once however many
schedulers run, and a payment racing the deadline serializes with it on the same row lock.

A round:
1. due groups — DRAFT/OPEN past the deadline (or OPEN past the host's grace period): the
   fallback applies. CANCEL (or grace passed, or never opened) → EXPIRED + `group.expired`
   (the payment service voids the holds). HOST_PAYS_REMAINING → the uncovered shares move to
   the host and a new intent is requested for the host (`group.host_fallback` once it exists).
2. fallbacks whose host intent is still missing (payment service was down): retried.
3. reminders — once per group, `group.reminder_due` for each unpaid member when the deadline
   is within MPPO_GROUP_REMINDER_LEAD_SECONDS and half of the payment window has passed.
4. payments to release (late / superseded / surplus): VoidPayment, or RefundPayment when the
   provider captured already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import and_, or_, select, update

from group_svc.adapters.tables import group_orders, group_payment_voids
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import FallbackOutcome
from group_svc.service_layer import events
from group_svc.service_layer.intents import complete_intents
from group_svc.service_layer.unit_of_work import Deps, GroupUnitOfWork
from mppo.platform.errors import DomainError, FailedPreconditionError, NotFoundError
from mppo.platform.logs import bind_ids

logger = logging.getLogger(__name__)

ACTOR = "system:scheduler"
BATCH = 20


class ExpiryScheduler:
    """A background worker (runtime.Worker) running scheduler rounds."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask run() to return after the current round."""
        self._stopping.set()

    async def run(self) -> None:
        """Run rounds every MPPO_GROUP_SCHEDULER_INTERVAL seconds until stopped."""
        logger.info("expiry scheduler started")
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("scheduler round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self._deps.settings.scheduler_interval
                )
        logger.info("expiry scheduler stopped")

    async def run_once(self) -> None:
        """One round of every duty."""
        for group_id in await self.expire_due():
            await self._complete(group_id)
        for group_id in await self._fallbacks_without_intent():
            await self._complete(group_id)
        await self.send_reminders()
        await self.release_payments()

    async def expire_due(self) -> list[str]:
        """Apply the fallback to due groups; the ids whose host now needs an intent."""
        deps = self._deps
        now = deps.clock()
        host_covers: list[str] = []
        async with GroupUnitOfWork(deps) as uow:
            due = (
                (
                    await uow.session.execute(
                        select(group_orders.c.group_id)
                        .where(
                            group_orders.c.status.in_(["DRAFT", "OPEN"]),
                            or_(
                                and_(
                                    group_orders.c.fallback_at.is_(None),
                                    group_orders.c.deadline <= now,
                                ),
                                group_orders.c.grace_deadline <= now,
                            ),
                        )
                        .order_by(group_orders.c.deadline)
                        .limit(BATCH)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            for group_id in due:
                group = await uow.groups.get(group_id, lock=True)
                if group is None or group.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
                    continue
                with bind_ids(group_id=group_id):
                    reason = "grace period passed" if group.fallback_at else "deadline passed"
                    outcome = group.apply_fallback(ACTOR, reason, deps.settings.host_grace, now)
                    await uow.groups.save(group)
                    if outcome is FallbackOutcome.EXPIRED:
                        uow.collect(events.expired(group))
                        logger.info("group expired (%s)", reason)
                    else:
                        host_covers.append(group_id)
                        logger.info("deadline passed: the host covers the rest")
            await uow.commit()
        return host_covers

    async def _fallbacks_without_intent(self) -> list[str]:
        async with GroupUnitOfWork(self._deps) as uow:
            rows = await uow.session.execute(
                select(group_orders.c.group_id)
                .where(
                    group_orders.c.status == "OPEN",
                    group_orders.c.fallback_at.is_not(None),
                    group_orders.c.fallback_notified_at.is_(None),
                )
                .limit(BATCH)
            )
            return list(rows.scalars().all())

    async def _complete(self, group_id: str) -> None:
        with bind_ids(group_id=group_id):
            try:
                await complete_intents(self._deps, group_id, ACTOR)
            except DomainError as exc:
                logger.warning("host fallback intent not created yet: %s", exc)

    async def send_reminders(self) -> int:
        """group.reminder_due once per unpaid member of groups close to their deadline."""
        deps = self._deps
        now = deps.clock()
        sent = 0
        async with GroupUnitOfWork(deps) as uow:
            due = (
                (
                    await uow.session.execute(
                        select(group_orders.c.group_id)
                        .where(
                            group_orders.c.status == "OPEN",
                            group_orders.c.reminder_sent_at.is_(None),
                            group_orders.c.fallback_at.is_(None),
                            group_orders.c.deadline <= now + deps.settings.reminder_lead,
                            group_orders.c.deadline > now,
                            # never right after the invitation: not before half of the
                            # payment window has passed (short deadlines)
                            group_orders.c.frozen_at
                            + (group_orders.c.deadline - group_orders.c.frozen_at) / 2
                            <= now,
                        )
                        .limit(BATCH)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            for group_id in due:
                group = await uow.groups.get(group_id, lock=True)
                if group is None or group.reminder_sent_at is not None:
                    continue
                group.reminder_sent_at = now
                for member in group.unpaid_required:
                    uow.collect(events.reminder_due(group, member))
                    sent += 1
                await uow.groups.save(group)
            await uow.commit()
        return sent

    async def release_payments(self) -> int:
        """Void (or refund) payments the groups do not keep."""
        deps = self._deps
        released = 0
        async with GroupUnitOfWork(deps) as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(group_payment_voids)
                        .where(group_payment_voids.c.status == "PENDING")
                        .order_by(group_payment_voids.c.created_at)
                        .limit(BATCH)
                        .with_for_update(skip_locked=True)
                    )
                )
                .mappings()
                .all()
            )
            for row in rows:
                with bind_ids(group_id=row["group_id"], payment_id=row["payment_id"]):
                    values: dict[str, object]
                    try:
                        await deps.payments.release(
                            row["payment_id"], row["captured"], row["reason"]
                        )
                        values = {"status": "DONE", "done_at": deps.clock()}
                        released += 1
                        logger.info("released a payment the group does not keep")
                    except (FailedPreconditionError, NotFoundError) as exc:
                        # already voided/refunded (e.g. on group.expired) or unknown: settled
                        values = {"status": "DONE", "done_at": deps.clock(), "last_error": str(exc)}
                    except DomainError as exc:
                        values = {
                            "attempts": group_payment_voids.c.attempts + 1,
                            "last_error": str(exc)[:1000],
                        }
                    await uow.session.execute(
                        update(group_payment_voids)
                        .where(group_payment_voids.c.payment_id == row["payment_id"])
                        .values(**values)
                    )
            await uow.commit()
        return released
