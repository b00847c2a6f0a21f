"""The saga runner and recovery worker: leases unfinished orders and advances them.

A :class:`~mppo.platform.worker.LoopWorker`: it runs a round at start-up (picking up whatever
a crashed process left in a non-terminal state once its lease lapsed), whenever it is woken
(after the commit that created an order) and every ``poll_interval`` seconds. Several replicas
may run it: a lease is taken with ``FOR UPDATE SKIP LOCKED``, so each due order goes to one of
them, and the saga takes a per-order lock before it acts, so no effect is doubled. The claim
reads the orders it leases in the same statement, and the saga starts from that copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mppo.platform.worker import LoopWorker
from order_svc.domain.model import Order
from order_svc.service_layer.saga import OrderSaga, SagaSettings
from order_svc.service_layer.unit_of_work import OrderUnitOfWork

logger = logging.getLogger(__name__)


class SagaRunner(LoopWorker):
    """Claims due orders and advances each in its own task (at most `concurrency` at once)."""

    name = "order saga runner"

    def __init__(
        self,
        uow: Callable[[], OrderUnitOfWork],
        saga: OrderSaga,
        settings: SagaSettings,
        *,
        poll_interval: float = 2.0,
        batch: int = 20,
        concurrency: int = 8,
    ) -> None:
        super().__init__(poll_interval=poll_interval)
        self._uow = uow
        self._saga = saga
        self._settings = settings
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()

    async def work(self) -> bool:
        """One round; True when a full batch was leased (more may be due)."""
        return await self.run_once() >= self._batch

    async def run_once(self) -> int:
        """Lease due orders and start advancing each; returns how many were leased."""
        async with self._uow() as uow:
            orders = await uow.orders.claim_due(self._batch, self._settings.lease_seconds)
            await uow.commit()
        for order in orders:
            task = asyncio.create_task(self._advance(order), name=f"order-{order.order_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(orders)

    async def _advance(self, order: Order) -> None:
        async with self._limit:
            try:
                await self._saga.advance(order.order_id, order)
            except Exception:
                logger.exception(
                    "order %s: saga step failed; retried after the lease", order.order_id
                )

    async def closing(self) -> None:
        """Stop the orders in flight (their leases lapse; a replica or restart resumes them)."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
