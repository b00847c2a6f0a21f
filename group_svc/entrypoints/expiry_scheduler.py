"""The expiry scheduler: deadlines, host fallback, reminders and releasing unwanted payments.

A LoopWorker, safe in every replica at once: each duty claims its rows with ``SELECT … FOR
UPDATE SKIP LOCKED`` and re-checks them under the lock, so one group expires once however
many schedulers run, and a payment racing the deadline serializes with it on the same row
lock (the fallback is re-checked under the lock after its payment links are closed). It
runs in the service unless MPPO_GROUP_SCHEDULER=off, and alone as
``python -m group_svc.standalone_scheduler``.

A round first reads which duties have work (one statement: an idle round commits nothing),
then does those:
1. due groups — DRAFT/OPEN past the deadline (or OPEN past the host's grace period): the
   fallback applies, once the payment links it leaves unwanted are closed at the payment
   service (until they are, the group stays due and is tried again next round). CANCEL (or
   grace passed, or never opened) → EXPIRED + `group.expired` (the payment service voids the
   holds). HOST_PAYS_REMAINING → the uncovered shares move to the host and a new intent is
   requested for the host (`group.host_fallback` once it exists); fallbacks whose host intent
   is still missing (payment service was down) are retried.
2. reminders — once per group, `group.reminder_due` for each unpaid member when the deadline
   is within MPPO_GROUP_REMINDER_LEAD_SECONDS and half of the payment window has passed.
3. payments to release (late / superseded / surplus): VoidPayment, or RefundPayment when the
   provider captured already; a refusal is final, a transient failure backs off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from group_svc.service_layer import commands as c
from group_svc.service_layer.handlers import GroupHandlers
from group_svc.service_layer.unit_of_work import GroupUnitOfWork
from mppo.platform.errors import DomainError
from mppo.platform.logs import bind_ids
from mppo.platform.worker import LoopWorker

logger = logging.getLogger(__name__)

ACTOR = "system:scheduler"
BATCH = 20


class ExpiryScheduler(LoopWorker):
    """Runs the scheduler's duties every MPPO_GROUP_SCHEDULER_INTERVAL seconds."""

    name = "expiry scheduler"

    def __init__(
        self,
        handlers: GroupHandlers,
        uow: Callable[[], GroupUnitOfWork],
        *,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(poll_interval=poll_interval)
        self._handlers = handlers
        self._uow = uow

    async def work(self) -> bool:
        """One round of the duties that have work (an idle round is one read and commits
        nothing); True when a duty had a full batch (more is waiting)."""
        duties = await self._handlers.scheduler_duties(self._uow())
        if duties.expiry:
            needs_intent = await self._handlers.expire_due_groups(
                c.ExpireDueGroups(ACTOR, BATCH), self._uow()
            )
            for group_id in needs_intent:
                with bind_ids(group_id=group_id):
                    try:
                        await self._handlers.complete_intents(
                            c.CompleteIntents(group_id, ACTOR), self._uow()
                        )
                    except DomainError as exc:
                        logger.warning("host fallback intent not created yet: %s", exc)
        if duties.reminders:
            async with self._uow() as uow:
                await self._handlers.send_reminders(c.SendReminders(BATCH), uow)
                await uow.commit()
        if not duties.releases:
            return False
        released = await self._handlers.release_payments(
            c.ReleasePayments(BATCH, backoff_seconds=self.poll_interval), self._uow()
        )
        return released >= BATCH
