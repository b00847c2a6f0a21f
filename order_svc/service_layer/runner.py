"""The saga runner and recovery worker: leases unfinished orders and advances them.

It runs at start-up (picking up whatever a crashed process left in a non-terminal state once
its lease lapsed), whenever it is woken (a new order committed) and every
``poll_interval`` seconds. Several replicas may run it: a lease is taken with
``FOR UPDATE SKIP LOCKED``, so each due order goes to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_svc.adapters.repository import OrderRepository
from order_svc.service_layer.saga import OrderSaga, SagaSettings

logger = logging.getLogger(__name__)


class SagaRunner:
    """A background worker (runtime.Worker)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        saga: OrderSaga,
        settings: SagaSettings,
        *,
        poll_interval: float = 2.0,
        batch: int = 20,
        concurrency: int = 8,
    ) -> None:
        self._sessions = sessions
        self._saga = saga
        self._settings = settings
        self._poll_interval = poll_interval
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Hint that an order was just committed (the poll is the guarantee)."""
        self._wakeup.set()

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Claim and advance due orders until stopped."""
        logger.info("order saga runner started")
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()
                try:
                    claimed = await self.run_once()
                except Exception:
                    logger.exception("saga runner round failed")
                    claimed = 0
                if claimed >= self._batch:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
        finally:
            for task in list(self._running):
                task.cancel()
            logger.info("order saga runner stopped")

    async def run_once(self) -> int:
        """Lease due orders and start advancing each; returns how many were leased."""
        async with self._sessions() as session, session.begin():
            order_ids = await OrderRepository(session).claim_due(
                self._batch, self._settings.lease_seconds
            )
        for order_id in order_ids:
            task = asyncio.create_task(self._advance(order_id), name=f"order-{order_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(order_ids)

    async def _advance(self, order_id: str) -> None:
        async with self._limit:
            try:
                await self._saga.advance(order_id)
            except Exception:
                logger.exception("order %s: saga step failed; retried after the lease", order_id)
