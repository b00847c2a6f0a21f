"""The reconciler: re-reads non-terminal payments, compensates closed groups, and warns before
holds lapse.

Safe with several replicas: due payments are claimed with ``FOR UPDATE SKIP LOCKED`` and their
next check pushed out in the same short transaction, so one replica handles each; provider
calls happen after that commit. Woken (``wake``) after a commit that made compensation due;
the reconcile interval is the safety net.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mppo.platform.logs import bind_ids
from mppo.platform.worker import LoopWorker
from payment_svc.service_layer import commands
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork

logger = logging.getLogger(__name__)


class Reconciler(LoopWorker):
    """Rounds every reconcile interval (at most 5 s apart), or sooner when woken."""

    name = "reconciler"

    def __init__(self, handlers: PaymentHandlers, uow: Callable[[], PaymentUnitOfWork]) -> None:
        settings = handlers.settings
        super().__init__(
            poll_interval=max(0.05, min(settings.reconcile_interval, 5.0)),
            max_backoff=max(settings.reconcile_interval, 5.0),
        )
        self._handlers = handlers
        self._uow = uow
        self._batch = settings.reconcile_batch

    async def work(self) -> bool:
        """One round; True when a full batch was due (more may be waiting)."""
        return await self.run_once() >= self._batch

    async def run_once(self) -> int:
        """One round; returns how many payments it looked at."""
        due = await self._handlers.claim_due_payments(
            commands.ClaimDuePayments(self._batch), self._uow()
        )
        for payment_id in due:
            if self.stopping:
                break
            with bind_ids(payment_id=payment_id):
                try:
                    await self._handlers.reconcile_payment(
                        commands.ReconcilePayment(payment_id), self._uow()
                    )
                except Exception as exc:
                    logger.warning("reconciling %s failed: %s", payment_id, exc)
        await self._handlers.warn_expiring_authorizations(
            commands.WarnExpiringAuthorizations(self._batch), self._uow()
        )
        return len(due)
