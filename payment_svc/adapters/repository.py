"""Loading and saving payments, provider id mappings, webhook events and closed groups.

:class:`PaymentRepository` is what the service layer may ask for; :class:`SqlPaymentRepository`
answers it inside the unit of work's transaction (the only SQL of the service outside its
migrations). Every payment it hands out or adds is given to ``track`` (the unit of work's), so
the events the payment records reach the outbox when the unit of work commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from payment_svc.adapters.tables import (
    closed_groups,
    payment_status_history,
    payments,
    provider_payment_map,
    webhook_events,
)
from payment_svc.domain.model import Payment, PaymentStatus

_FIELDS = (
    "status",
    "provider_payment_id",
    "provider_checkout_id",
    "payment_link",
    "amount_authorized_minor",
    "amount_captured_minor",
    "amount_refunded_minor",
    "failure_reason",
    "authorization_expires_at",
)


def _to_payment(row: Any) -> Payment:
    return Payment(
        payment_id=row.payment_id,
        group_id=row.group_id,
        member_id=row.member_id,
        attempt=row.attempt,
        amount_minor=row.amount_minor,
        currency_code=row.currency_code,
        provider=row.provider,
        status=PaymentStatus(row.status),
        provider_payment_id=row.provider_payment_id,
        provider_checkout_id=row.provider_checkout_id,
        payment_link=row.payment_link,
        description=row.description,
        amount_authorized_minor=row.amount_authorized_minor,
        amount_captured_minor=row.amount_captured_minor,
        amount_refunded_minor=row.amount_refunded_minor,
        failure_reason=row.failure_reason,
        authorization_expires_at=row.authorization_expires_at,
    )


class PaymentRepository(Protocol):
    """Payments and what hangs off them, within one unit of work."""

    async def get(self, payment_id: str, *, lock: bool = False) -> Payment | None:
        """The payment (row-locked FOR UPDATE when ``lock``)."""

    async def get_attempt(self, group_id: str, member_id: str, attempt: int) -> Payment | None:
        """The payment for one member attempt."""

    async def list_group(self, group_id: str) -> list[Payment]:
        """A group's payments, oldest first."""

    async def add(self, payment: Payment, *, return_url: str, payer_user_id: str) -> bool:
        """Insert a new payment; False when its (group, member, attempt) exists already."""

    async def save(self, payment: Payment) -> None:
        """Write the payment's fields and its new history rows."""

    async def schedule_check(self, payment_id: str, at: datetime | None, *, reset: bool) -> None:
        """When reconciliation should look at the payment next (None: never)."""

    async def map_provider_id(
        self, provider: str, provider_payment_id: str, payment_id: str
    ) -> None:
        """Remember that ``provider_payment_id`` names our payment."""

    async def find_by_provider_id(self, provider: str, provider_payment_id: str) -> str | None:
        """Our payment id for a provider id."""

    async def record_webhook(
        self, provider: str, event_id: str, event_type: str, provider_payment_id: str, body: str
    ) -> bool:
        """Store a verified event once; False when (provider, event id) was seen before."""

    async def webhook_outcome(
        self,
        provider: str,
        event_id: str,
        outcome: str,
        payment_id: str | None,
        *,
        detail: str = "",
    ) -> None:
        """What handling the event did (applied, stale, refetched, unmatched, mismatch,
        malformed…) and, for the operator, why."""

    async def close_group(self, group_id: str, reason: str) -> None:
        """Remember the group is over and mark its payments for void/refund now."""

    async def compensate(self, payment_ids: Sequence[str], reason: str) -> None:
        """Mark these payments (of any group) for void/refund, unless already marked."""

    async def group_closed(self, group_id: str) -> str | None:
        """Why the group was closed, or None while it is open."""

    async def compensate_reason(self, payment_id: str) -> str:
        """Why the payment's money must go back ("" when it need not)."""

    async def claim_due(self, limit: int, statuses: Sequence[str]) -> list[tuple[str, int]]:
        """Due payments (payment id, checks so far), locked so replicas split them."""

    async def bump_check(self, payment_id: str, at: datetime) -> None:
        """Push the next check to ``at`` and count this one."""

    async def expiring(self, before: datetime, limit: int) -> list[str]:
        """Authorized payments whose hold lapses before ``before`` and were not warned."""

    async def mark_warned(self, payment_id: str) -> None:
        """Record that the expiry warning went out."""


class SqlPaymentRepository:
    """:class:`PaymentRepository` over the unit of work's session."""

    def __init__(self, session: AsyncSession, track: Callable[[Payment], None]) -> None:
        self.session = session
        self._track_in_uow = track

    def _track(self, payment: Payment) -> Payment:
        self._track_in_uow(payment)
        return payment

    async def get(self, payment_id: str, *, lock: bool = False) -> Payment | None:
        """The payment (row-locked FOR UPDATE when ``lock``)."""
        query = select(payments).where(payments.c.payment_id == payment_id)
        if lock:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return self._track(_to_payment(row)) if row is not None else None

    async def get_attempt(self, group_id: str, member_id: str, attempt: int) -> Payment | None:
        """The payment for one member attempt."""
        row = (
            await self.session.execute(
                select(payments).where(
                    payments.c.group_id == group_id,
                    payments.c.member_id == member_id,
                    payments.c.attempt == attempt,
                )
            )
        ).first()
        return self._track(_to_payment(row)) if row is not None else None

    async def list_group(self, group_id: str) -> list[Payment]:
        """A group's payments, oldest first."""
        rows = await self.session.execute(
            select(payments)
            .where(payments.c.group_id == group_id)
            .order_by(payments.c.created_at, payments.c.payment_id)
        )
        return [self._track(_to_payment(r)) for r in rows]

    async def add(self, payment: Payment, *, return_url: str, payer_user_id: str) -> bool:
        """Insert a new payment; False when its (group, member, attempt) exists already."""
        self._track(payment)
        inserted = await self.session.execute(
            pg_insert(payments)
            .values(
                payment_id=payment.payment_id,
                group_id=payment.group_id,
                member_id=payment.member_id,
                attempt=payment.attempt,
                amount_minor=payment.amount_minor,
                currency_code=payment.currency_code,
                provider=payment.provider,
                status=payment.status.value,
                description=payment.description,
                return_url=return_url,
                payer_user_id=payer_user_id,
            )
            .on_conflict_do_nothing(constraint="uq_payments_attempt")
            .returning(payments.c.payment_id)
        )
        return inserted.first() is not None

    async def save(self, payment: Payment) -> None:
        """Write the payment's fields and its new history rows."""
        values = {name: getattr(payment, name) for name in _FIELDS}
        values["status"] = payment.status.value
        await self.session.execute(
            update(payments)
            .where(payments.c.payment_id == payment.payment_id)
            .values(**values, updated_at=func.now())
        )
        for change in payment.changes:
            await self.session.execute(
                insert(payment_status_history).values(
                    payment_id=payment.payment_id,
                    from_status=change.from_status.value if change.from_status else None,
                    to_status=change.to_status.value,
                    reason=change.reason[:500],
                    actor=change.actor,
                )
            )
        payment.changes.clear()

    async def schedule_check(self, payment_id: str, at: datetime | None, *, reset: bool) -> None:
        """When reconciliation should look at the payment next (None: never)."""
        values: dict[str, Any] = {"next_check_at": at}
        if reset:
            values["checks"] = 0
        await self.session.execute(
            update(payments).where(payments.c.payment_id == payment_id).values(**values)
        )

    async def map_provider_id(
        self, provider: str, provider_payment_id: str, payment_id: str
    ) -> None:
        """Remember that ``provider_payment_id`` names our payment."""
        if not provider_payment_id:
            return
        await self.session.execute(
            pg_insert(provider_payment_map)
            .values(
                provider=provider, provider_payment_id=provider_payment_id, payment_id=payment_id
            )
            .on_conflict_do_nothing()
        )

    async def find_by_provider_id(self, provider: str, provider_payment_id: str) -> str | None:
        """Our payment id for a provider id."""
        return (
            await self.session.execute(
                select(provider_payment_map.c.payment_id).where(
                    provider_payment_map.c.provider == provider,
                    provider_payment_map.c.provider_payment_id == provider_payment_id,
                )
            )
        ).scalar_one_or_none()

    async def record_webhook(
        self, provider: str, event_id: str, event_type: str, provider_payment_id: str, body: str
    ) -> bool:
        """Store a verified event once; False when (provider, event id) was seen before.

        A concurrent delivery of the same event waits here on the primary key until the first
        transaction ends, then sees the conflict.
        """
        inserted = await self.session.execute(
            pg_insert(webhook_events)
            .values(
                provider=provider,
                event_id=event_id,
                event_type=event_type,
                provider_payment_id=provider_payment_id,
                outcome="received",
                body=body,
            )
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
            .returning(webhook_events.c.event_id)
        )
        return inserted.first() is not None

    async def webhook_outcome(
        self,
        provider: str,
        event_id: str,
        outcome: str,
        payment_id: str | None,
        *,
        detail: str = "",
    ) -> None:
        """What handling the event did (applied, stale, refetched, unmatched, mismatch,
        malformed…) and, for the operator, why."""
        await self.session.execute(
            update(webhook_events)
            .where(webhook_events.c.provider == provider, webhook_events.c.event_id == event_id)
            .values(outcome=outcome, payment_id=payment_id, detail=detail[:1000])
        )

    async def close_group(self, group_id: str, reason: str) -> None:
        """Remember the group is over and mark its payments for void/refund now."""
        await self.session.execute(
            pg_insert(closed_groups)
            .values(group_id=group_id, reason=reason)
            .on_conflict_do_nothing()
        )
        await self.session.execute(
            update(payments)
            .where(payments.c.group_id == group_id, payments.c.compensate_reason == "")
            .values(compensate_reason=reason, next_check_at=func.now(), checks=0)
        )

    async def compensate(self, payment_ids: Sequence[str], reason: str) -> None:
        """Mark these payments (of any group) for void/refund, unless already marked."""
        if not payment_ids:
            return
        await self.session.execute(
            update(payments)
            .where(payments.c.payment_id.in_(list(payment_ids)), payments.c.compensate_reason == "")
            .values(compensate_reason=reason)
        )

    async def group_closed(self, group_id: str) -> str | None:
        """Why the group was closed, or None while it is open."""
        return (
            await self.session.execute(
                select(closed_groups.c.reason).where(closed_groups.c.group_id == group_id)
            )
        ).scalar_one_or_none()

    async def compensate_reason(self, payment_id: str) -> str:
        """Why the payment's money must go back ("" when it need not)."""
        reason = (
            await self.session.execute(
                select(payments.c.compensate_reason).where(payments.c.payment_id == payment_id)
            )
        ).scalar_one_or_none()
        return reason or ""

    async def claim_due(self, limit: int, statuses: Sequence[str]) -> list[tuple[str, int]]:
        """Due payments (payment id, checks so far), locked SKIP LOCKED so replicas split."""
        rows = await self.session.execute(
            select(payments.c.payment_id, payments.c.checks)
            .where(
                payments.c.next_check_at.is_not(None),
                payments.c.next_check_at <= func.now(),
                payments.c.status.in_(list(statuses)),
            )
            .order_by(payments.c.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [(r.payment_id, r.checks) for r in rows]

    async def bump_check(self, payment_id: str, at: datetime) -> None:
        """Push the next check to ``at`` and count this one."""
        await self.session.execute(
            update(payments)
            .where(payments.c.payment_id == payment_id)
            .values(next_check_at=at, checks=payments.c.checks + 1)
        )

    async def expiring(self, before: datetime, limit: int) -> list[str]:
        """Authorized payments whose hold lapses before ``before`` and were not warned."""
        rows = await self.session.execute(
            select(payments.c.payment_id)
            .where(
                payments.c.status == PaymentStatus.AUTHORIZED.value,
                payments.c.authorization_expires_at.is_not(None),
                payments.c.authorization_expires_at <= before,
                payments.c.expiry_warned_at.is_(None),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [r.payment_id for r in rows]

    async def mark_warned(self, payment_id: str) -> None:
        """Record that the expiry warning went out."""
        await self.session.execute(
            update(payments)
            .where(payments.c.payment_id == payment_id)
            .values(expiry_warned_at=func.now())
        )
