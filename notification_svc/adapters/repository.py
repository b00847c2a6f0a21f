"""SQL for notifications and payment facts (SQLAlchemy Core on the service's own database).

:class:`NotificationRepository` and :class:`PaymentFactRepository` work inside the session of
the :class:`~notification_svc.service_layer.unit_of_work.NotificationUnitOfWork` that attaches
them; committing is the unit of work's business, never a repository's.

Delivery claims due PENDING rows with ``FOR UPDATE SKIP LOCKED`` and leases them for a while,
so replicas never send the same row at once and a sender that dies mid-delivery leaves a row
another sender (or itself, after restart) picks up again when the lease runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notification_svc.adapters.tables import member_payments, notifications
from notification_svc.domain.model import Channel, Kind, Notification, Planned, Status
from notification_svc.domain.outcome import PaymentFacts


def _notification(row: Any) -> Notification:
    """A stored notification from a result row mapping."""
    return Notification(
        notification_id=row["notification_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        group_id=row["group_id"],
        member_id=row["member_id"],
        kind=Kind(row["kind"]),
        channel=Channel(row["channel"]),
        status=Status(row["status"]),
        params={str(k): str(v) for k, v in (row["params"] or {}).items()},
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
    )


def _leased(notification_id: str) -> Any:
    t = notifications
    return and_(t.c.notification_id == notification_id, t.c.status == Status.PENDING.value)


class NotificationRepository:
    """The ``notifications`` table: one row per (event, recipient, channel)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, *, event_id: str, event_type: str, planned: Sequence[Planned]) -> int:
        """Insert the planned notifications; ones that already exist are left alone.

        Returns how many rows were new.
        """
        created = 0
        for item in planned:
            result = await self._session.execute(
                insert(notifications)
                .values(
                    notification_id=str(uuid.uuid4()),
                    event_id=event_id,
                    event_type=event_type,
                    group_id=item.group_id,
                    member_id=item.member_id,
                    kind=item.kind.value,
                    channel=item.channel.value,
                    status=Status.PENDING.value,
                    params=dict(item.params),
                )
                .on_conflict_do_nothing(constraint="uq_notifications_recipient")
                .returning(notifications.c.notification_id)
            )
            created += result.first() is not None
        return created

    async def claim_due(self, *, limit: int, lease: timedelta) -> list[Notification]:
        """Lease up to ``limit`` due PENDING rows (commit to make the lease visible)."""
        t = notifications
        now = func.now()
        due = (
            select(t.c.notification_id)
            .where(
                t.c.status == Status.PENDING.value,
                t.c.next_attempt_at <= now,
                or_(t.c.lease_until.is_(None), t.c.lease_until < now),
            )
            .order_by(t.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self._session.execute(
            update(t)
            .where(t.c.notification_id.in_(due.scalar_subquery()))
            .values(lease_until=now + lease)
            .returning(*t.c)
        )
        rows = [_notification(r) for r in result.mappings()]
        return sorted(rows, key=lambda r: r.created_at)

    async def mark_sent(self, notification_ids: Sequence[str]) -> None:
        """Delivered: SENT, with the time and one more attempt counted (one statement)."""
        if not notification_ids:
            return
        t = notifications
        await self._session.execute(
            update(t)
            .where(
                t.c.notification_id.in_(list(notification_ids)),
                t.c.status == Status.PENDING.value,
            )
            .values(
                status=Status.SENT.value,
                sent_at=func.now(),
                attempts=t.c.attempts + 1,
                lease_until=None,
            )
        )

    async def mark_attempt_failed(
        self, notification_id: str, *, error: str, retry_in: float | None
    ) -> None:
        """A failed attempt: retry after ``retry_in`` seconds, or FAILED when it is None."""
        t = notifications
        values: dict[str, Any] = {
            "attempts": t.c.attempts + 1,
            "last_error": error[:500],
            "lease_until": None,
        }
        if retry_in is None:
            values["status"] = Status.FAILED.value
        else:
            values["next_attempt_at"] = func.now() + timedelta(seconds=retry_in)
        await self._session.execute(update(t).where(_leased(notification_id)).values(**values))

    async def defer(self, notification_id: str, *, seconds: float) -> None:
        """Not an attempt: look at the row again later (waiting for payment facts to settle)."""
        t = notifications
        await self._session.execute(
            update(t)
            .where(_leased(notification_id))
            .values(next_attempt_at=func.now() + timedelta(seconds=seconds), lease_until=None)
        )

    async def for_group(
        self,
        *,
        group_id: str,
        member_id: str = "",
        kind: Kind | None = None,
        channel: Channel | None = None,
    ) -> list[Notification]:
        """A group's notifications, oldest first, optionally filtered."""
        t = notifications
        query = select(t).where(t.c.group_id == group_id)
        if member_id:
            query = query.where(t.c.member_id == member_id)
        if kind is not None:
            query = query.where(t.c.kind == kind.value)
        if channel is not None:
            query = query.where(t.c.channel == channel.value)
        rows = await self._session.execute(
            query.order_by(t.c.created_at, t.c.kind, t.c.member_id, t.c.channel)
        )
        return [_notification(r) for r in rows.mappings()]


class PaymentFactRepository:
    """The ``member_payments`` table: what is known about each payment of a member."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(
        self,
        *,
        payment_id: str,
        group_id: str,
        member_id: str,
        amount_minor: int = 0,
        currency: str = "",
        secured: bool = False,
        captured: bool = False,
        voided: bool = False,
        refunded: bool = False,
    ) -> None:
        """Merge one payment fact; flags only ever turn on, in whatever order facts arrive."""
        table = member_payments
        values: dict[str, Any] = {
            "payment_id": payment_id,
            "group_id": group_id,
            "member_id": member_id,
            "secured": secured,
            "captured": captured,
            "voided": voided,
            "refunded": refunded,
            "amount_minor": amount_minor,
            "currency": currency,
        }
        stmt = insert(table).values(**values)
        excluded = stmt.excluded
        await self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.payment_id],
                set_={
                    "secured": table.c.secured | excluded.secured,
                    "captured": table.c.captured | excluded.captured,
                    "voided": table.c.voided | excluded.voided,
                    "refunded": table.c.refunded | excluded.refunded,
                    "amount_minor": func.greatest(table.c.amount_minor, excluded.amount_minor),
                    "currency": func.coalesce(func.nullif(table.c.currency, ""), excluded.currency),
                    "group_id": func.coalesce(func.nullif(table.c.group_id, ""), excluded.group_id),
                    "member_id": func.coalesce(
                        func.nullif(table.c.member_id, ""), excluded.member_id
                    ),
                    "updated_at": func.now(),
                },
            )
        )

    async def for_member(self, group_id: str, member_id: str) -> list[PaymentFacts]:
        """What is known about the member's payments in the group."""
        t = member_payments
        rows = await self._session.execute(
            select(t).where(t.c.group_id == group_id, t.c.member_id == member_id)
        )
        return [
            PaymentFacts(
                payment_id=r.payment_id,
                secured=r.secured,
                captured=r.captured,
                voided=r.voided,
                refunded=r.refunded,
                amount_minor=int(r.amount_minor),
                currency=r.currency,
            )
            for r in rows
        ]
