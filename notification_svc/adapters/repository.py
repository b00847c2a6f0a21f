"""SQL for notifications and payment facts (SQLAlchemy Core on the service's own database).

:class:`NotificationRepository` and :class:`PaymentFactRepository` work inside the session of
the :class:`~notification_svc.service_layer.unit_of_work.NotificationUnitOfWork` that attaches
them; committing is the unit of work's business, never a repository's.

Delivery claims due PENDING rows with ``FOR UPDATE SKIP LOCKED`` and leases them for a while,
so replicas never send the same row at once and a sender that dies mid-delivery leaves a row
another sender (or itself, after restart) picks up again when the lease runs out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Interval,
    Text,
    bindparam,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from notification_svc.adapters.tables import member_payments, notifications
from notification_svc.domain.model import (
    Channel,
    DeliveryResult,
    Kind,
    Notification,
    Planned,
    Result,
    Status,
)
from notification_svc.domain.outcome import PaymentFacts

# Statements are built once, here, with bind parameters: SQLAlchemy's compiled cache then hits
# on a key it memoized on the statement object, instead of building and hashing a new
# statement per call (the profile's `expect`, `_generate_cache_key`, `visit_dml_values`).

_TEXTS = ARRAY(Text)

#: every planned notification of one event in one statement (rows that exist are left alone)
_ADD = text(
    """
    INSERT INTO notifications
        (notification_id, event_id, event_type, group_id, member_id, kind, channel, status,
         params)
    SELECT n.notification_id, :event_id, :event_type, n.group_id, n.member_id, n.kind,
           n.channel, 'PENDING', CAST(n.params AS jsonb)
    FROM unnest(CAST(:ids AS text[]), CAST(:group_ids AS text[]), CAST(:member_ids AS text[]),
                CAST(:kinds AS text[]), CAST(:channels AS text[]), CAST(:params AS text[]))
         AS n(notification_id, group_id, member_id, kind, channel, params)
    ON CONFLICT ON CONSTRAINT uq_notifications_recipient DO NOTHING
    RETURNING notification_id
    """
).bindparams(
    bindparam("event_id", type_=Text),
    bindparam("event_type", type_=Text),
    bindparam("ids", type_=_TEXTS),
    bindparam("group_ids", type_=_TEXTS),
    bindparam("member_ids", type_=_TEXTS),
    bindparam("kinds", type_=_TEXTS),
    bindparam("channels", type_=_TEXTS),
    bindparam("params", type_=_TEXTS),
)

_now = func.now()
_due = (
    select(notifications.c.notification_id)
    .where(
        notifications.c.status == Status.PENDING.value,
        notifications.c.next_attempt_at <= _now,
        or_(notifications.c.lease_until.is_(None), notifications.c.lease_until < _now),
    )
    .order_by(notifications.c.next_attempt_at)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)
#: lease up to :limit due PENDING rows
_CLAIM = (
    update(notifications)
    .where(notifications.c.notification_id.in_(_due.scalar_subquery()))
    .values(lease_until=_now + bindparam("lease", type_=Interval))
    .returning(*notifications.c)
)

#: the outcomes of a delivery round, every row in one statement (see Result)
_RECORD = text(
    f"""
    UPDATE notifications AS t SET
        status = CASE r.result WHEN '{Result.SENT}' THEN '{Status.SENT}'
                               WHEN '{Result.FAILED}' THEN '{Status.FAILED}'
                               ELSE t.status END,
        attempts = t.attempts + CASE r.result WHEN '{Result.DEFERRED}' THEN 0 ELSE 1 END,
        sent_at = CASE r.result WHEN '{Result.SENT}' THEN now() ELSE t.sent_at END,
        last_error = CASE WHEN r.result IN ('{Result.RETRY}', '{Result.FAILED}')
                          THEN r.error ELSE t.last_error END,
        next_attempt_at = CASE WHEN r.result IN ('{Result.RETRY}', '{Result.DEFERRED}')
                               THEN now() + r.delay * interval '1 second'
                               ELSE t.next_attempt_at END,
        lease_until = NULL
    FROM unnest(CAST(:ids AS text[]), CAST(:results AS text[]), CAST(:errors AS text[]),
                CAST(:delays AS float8[])) AS r(notification_id, result, error, delay)
    WHERE t.notification_id = r.notification_id AND t.status = '{Status.PENDING}'
    """
).bindparams(
    bindparam("ids", type_=_TEXTS),
    bindparam("results", type_=_TEXTS),
    bindparam("errors", type_=_TEXTS),
    bindparam("delays", type_=ARRAY(Float)),
)

_payments_insert = insert(member_payments).values(
    {
        name: bindparam(name, type_=member_payments.c[name].type)
        for name in (
            "payment_id",
            "group_id",
            "member_id",
            "secured",
            "captured",
            "voided",
            "refunded",
            "amount_minor",
            "currency",
        )
    }
)
_p, _excluded = member_payments.c, _payments_insert.excluded
#: merge one payment fact: flags only ever turn on, in whatever order facts arrive
_RECORD_FACT = _payments_insert.on_conflict_do_update(
    index_elements=[_p.payment_id],
    set_={
        "secured": _p.secured | _excluded.secured,
        "captured": _p.captured | _excluded.captured,
        "voided": _p.voided | _excluded.voided,
        "refunded": _p.refunded | _excluded.refunded,
        "amount_minor": func.greatest(_p.amount_minor, _excluded.amount_minor),
        "currency": func.coalesce(func.nullif(_p.currency, ""), _excluded.currency),
        "group_id": func.coalesce(func.nullif(_p.group_id, ""), _excluded.group_id),
        "member_id": func.coalesce(func.nullif(_p.member_id, ""), _excluded.member_id),
        "updated_at": func.now(),
    },
)
_FACTS_OF_MEMBER = select(member_payments).where(
    _p.group_id == bindparam("group_id", type_=Text),
    _p.member_id == bindparam("member_id", type_=Text),
)


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


class NotificationRepository:
    """The ``notifications`` table: one row per (event, recipient, channel)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, *, event_id: str, event_type: str, planned: Sequence[Planned]) -> int:
        """Insert the planned notifications (one statement); ones that already exist are left
        alone. Returns how many rows were new.
        """
        if not planned:
            return 0
        result = await self._session.execute(
            _ADD,
            {
                "event_id": event_id,
                "event_type": event_type,
                "ids": [str(uuid.uuid4()) for _ in planned],
                "group_ids": [p.group_id for p in planned],
                "member_ids": [p.member_id for p in planned],
                "kinds": [p.kind.value for p in planned],
                "channels": [p.channel.value for p in planned],
                "params": [json.dumps(dict(p.params)) for p in planned],
            },
        )
        return len(result.all())

    async def claim_due(self, *, limit: int, lease: timedelta) -> list[Notification]:
        """Lease up to ``limit`` due PENDING rows (one statement; commit to make the lease
        visible)."""
        result = await self._session.execute(_CLAIM, {"limit": limit, "lease": lease})
        rows = [_notification(r) for r in result.mappings()]
        return sorted(rows, key=lambda r: r.created_at)

    async def record(self, results: Sequence[DeliveryResult]) -> None:
        """What a delivery round did with its rows, in one statement (rows no longer PENDING
        are left alone)."""
        if not results:
            return
        await self._session.execute(
            _RECORD,
            {
                "ids": [r.notification_id for r in results],
                "results": [r.result.value for r in results],
                "errors": [r.error[:500] for r in results],
                "delays": [float(r.delay_seconds) for r in results],
            },
        )

    async def mark_sent(self, notification_ids: Sequence[str]) -> None:
        """Delivered: SENT, with the time and one more attempt counted (one statement)."""
        await self.record([DeliveryResult(n, Result.SENT) for n in notification_ids])

    async def mark_attempt_failed(
        self, notification_id: str, *, error: str, retry_in: float | None
    ) -> None:
        """A failed attempt: retry after ``retry_in`` seconds, or FAILED when it is None."""
        if retry_in is None:
            await self.record([DeliveryResult(notification_id, Result.FAILED, error)])
        else:
            await self.record([DeliveryResult(notification_id, Result.RETRY, error, retry_in)])

    async def defer(self, notification_id: str, *, seconds: float) -> None:
        """Not an attempt: look at the row again later (waiting for payment facts to settle)."""
        await self.record([DeliveryResult(notification_id, Result.DEFERRED, "", seconds)])

    async def for_group(
        self,
        *,
        group_id: str,
        member_id: str = "",
        kind: Kind | None = None,
        channel: Channel | None = None,
        after: str = "",
        limit: int | None = None,
    ) -> list[Notification]:
        """A group's notifications, oldest first, optionally filtered: the `limit` first after
        the notification `after` (keyset on its sort key, read in the same statement)."""
        t = notifications
        order = (t.c.created_at, t.c.kind, t.c.member_id, t.c.channel, t.c.notification_id)
        query = select(t).where(t.c.group_id == group_id)
        if after:
            mark = select(*order).where(t.c.notification_id == after).subquery()
            query = query.where(tuple_(*order) > tuple_(*mark.c))
        if member_id:
            query = query.where(t.c.member_id == member_id)
        if kind is not None:
            query = query.where(t.c.kind == kind.value)
        if channel is not None:
            query = query.where(t.c.channel == channel.value)
        rows = await self._session.execute(query.order_by(*order).limit(limit))
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
        await self._session.execute(
            _RECORD_FACT,
            {
                "payment_id": payment_id,
                "group_id": group_id,
                "member_id": member_id,
                "secured": secured,
                "captured": captured,
                "voided": voided,
                "refunded": refunded,
                "amount_minor": amount_minor,
                "currency": currency,
            },
        )

    async def for_member(self, group_id: str, member_id: str) -> list[PaymentFacts]:
        """What is known about the member's payments in the group."""
        rows = await self._session.execute(
            _FACTS_OF_MEMBER, {"group_id": group_id, "member_id": member_id}
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
