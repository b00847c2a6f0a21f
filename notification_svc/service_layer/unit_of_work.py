"""The notification service's unit of work: the platform's, with its repositories attached.

The service records no outbox events of its own (it only consumes), so the unit of work's
outbox drain stays empty; what it adds is the repositories and, through
:meth:`~mppo.platform.unit_of_work.UnitOfWork.after_commit`, the sender's wake-up once new
rows are visible.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mppo.platform.unit_of_work import UnitOfWork
from notification_svc.adapters.repository import NotificationRepository, PaymentFactRepository


class NotificationUnitOfWork(UnitOfWork):
    """``uow.notifications`` and ``uow.payments`` over the transaction's session."""

    notifications: NotificationRepository
    payments: PaymentFactRepository

    def _open(self, session: AsyncSession) -> None:
        self.notifications = NotificationRepository(session)
        self.payments = PaymentFactRepository(session)
