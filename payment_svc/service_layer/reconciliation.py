"""The reconciliation engine: re-reads non-terminal payments, compensates closed groups, and
warns before holds lapse. Safe with several replicas: due payments are claimed with
``FOR UPDATE SKIP LOCKED`` and their next check pushed out in the same short transaction, so
one replica handles each; provider calls happen after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from mppo.platform.logs import bind_ids
from payment_svc.domain.model import PaymentStatus
from payment_svc.service_layer.payments import PaymentService

logger = logging.getLogger(__name__)

S = PaymentStatus
_WATCHED = [s.value for s in (S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED)]


class Reconciler:
    """A background worker (``run``/``stop``/``wake``)."""

    def __init__(self, service: PaymentService) -> None:
        self._service = service
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stopping.set()
        self._wakeup.set()

    def wake(self) -> None:
        """Run a round soon (compensation became due)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Rounds every reconcile interval (or sooner when woken) until stopped."""
        settings = self._service.settings
        tick = max(0.05, min(settings.reconcile_interval, 5.0))
        logger.info("reconciler started (interval %.1fs)", settings.reconcile_interval)
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                await self.run_once()
            except Exception:
                logger.exception("reconciliation round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=tick)
        logger.info("reconciler stopped")

    async def run_once(self) -> int:
        """One round; returns how many payments it looked at."""
        service = self._service
        settings = service.settings
        async with service.uow() as uow:
            due = await uow.payments.claim_due(settings.reconcile_batch, _WATCHED)
            for payment_id, checks in due:
                delay = min(
                    settings.reconcile_interval * 2 ** min(checks + 1, 16),
                    settings.reconcile_max_interval,
                )
                await uow.payments.bump_check(
                    payment_id, datetime.now(UTC) + timedelta(seconds=delay)
                )
            await uow.commit()
        for payment_id, _ in due:
            with bind_ids(payment_id=payment_id):
                try:
                    await self.reconcile(payment_id)
                except Exception as exc:
                    logger.warning("reconciling %s failed: %s", payment_id, exc)
        await self.warn_expiring()
        return len(due)

    async def reconcile(self, payment_id: str) -> None:
        """Compensate a payment of a closed group, or re-read it from its provider."""
        service = self._service
        async with service.uow() as uow:
            reason = await uow.payments.compensate_reason(payment_id)
        payment, changed = await service.sync(payment_id)
        if changed:
            logger.info("reconciliation repaired %s: now %s", payment_id, payment.status.value)
        if not reason:
            return
        if payment.status in (S.AUTHORIZED, S.REQUIRES_ACTION):
            payment = await service.void(payment_id, reason, actor="reconciler")
            logger.info("voided %s of closed group %s", payment_id, payment.group_id)
        elif payment.status in (S.CAPTURED, S.PARTIALLY_REFUNDED):
            payment = await service.refund(
                payment_id, None, reason, actor="reconciler", key="compensation"
            )
            logger.info("refunded %s of closed group %s", payment_id, payment.group_id)

    async def warn_expiring(self) -> None:
        """payment.authorization_expiring for holds that lapse within the warning window."""
        service = self._service
        horizon = datetime.now(UTC) + timedelta(
            seconds=service.settings.authorization_warning_seconds
        )
        async with service.uow() as uow:
            for payment_id in await uow.payments.expiring(
                horizon, service.settings.reconcile_batch
            ):
                payment = await uow.payments.get(payment_id)
                if payment is None:
                    continue
                payment.warn_authorization_expiring()
                await uow.payments.mark_warned(payment_id)
                logger.warning("authorization of %s lapses soon", payment_id)
            await uow.commit()
