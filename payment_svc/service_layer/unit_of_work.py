"""The payment service's unit of work: the platform's, with the payment repository attached.

The events a payment records reach the outbox through :func:`messages.to_event` when the unit
of work commits (the repository tracks every payment it hands out). The repository queues the
writes nothing reads back before the commit; :meth:`PaymentUnitOfWork.commit` flushes them
first, in the same transaction.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.platform.unit_of_work import UnitOfWork
from payment_svc.adapters.repository import PaymentRepository, SqlPaymentRepository
from payment_svc.service_layer.messages import to_event


class PaymentUnitOfWork(UnitOfWork):
    """``async with uow:`` … ``await uow.commit()``: payment rows, history and events at once."""

    payments: PaymentRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(sessions, translate=to_event)

    def _open(self, session: AsyncSession) -> None:
        self.payments = SqlPaymentRepository(session, self.track)

    async def commit(self) -> None:
        """Write the repository's queued writes, then the outbox, and commit."""
        await self.payments.flush()
        await super().commit()

    async def rollback(self) -> None:
        """Discard the transaction with the repository's queued writes."""
        await super().rollback()
        self._open(self.session)
