"""The order service's unit of work: one transaction over the orders.

The platform's :class:`~mppo.platform.unit_of_work.UnitOfWork` does the rest: the events each
order records (created, confirmed, failed) become outbox rows in the committing transaction
(translated by :func:`order_svc.service_layer.messages.to_outbox`), and after-commit callbacks
(waking the saga runner) run once the commit succeeded.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.platform.unit_of_work import UnitOfWork
from order_svc.adapters.repository import OrderRepository
from order_svc.service_layer.messages import to_outbox
from order_svc.service_layer.ports import Orders


class OrderUnitOfWork(UnitOfWork):
    """``async with uow:`` … ``uow.orders`` … ``await uow.commit()``."""

    orders: Orders

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(sessions, to_outbox)

    def _open(self, session: AsyncSession) -> None:
        self.orders = OrderRepository(session, self.track)
