"""The payment service's unit of work: one transaction, its repository, its outbox events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.platform.db import UnitOfWork
from mppo.platform.events import Event
from payment_svc.adapters.repository import PaymentRepository
from payment_svc.service_layer.messages import to_event


class PaymentUnitOfWork(UnitOfWork):
    """``async with uow:`` … ``await uow.commit()``: payment rows, history and events at once."""

    payments: PaymentRepository

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(session_factory)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.payments = PaymentRepository(self.session)
        return self

    def _collect_events(self) -> Iterable[Event]:
        for payment in self.payments.seen:
            while payment.events:
                yield to_event(payment, payment.events.pop(0))
