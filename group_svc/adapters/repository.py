"""Every SQL statement of the group service: the Group aggregate, the queue of payments to
release, and the idempotency keys of mutating calls.

`GroupRepository` loads and saves the Group aggregate; a loaded group can be locked for the
transaction, and every group it hands out is tracked by the unit of work (which publishes the
events the group records).

Every change of a group runs under ``SELECT … FOR UPDATE`` of its group_orders row (so two
replicas handling events for the same group serialize), and `save` additionally checks and
bumps the optimistic `version` (a lost update raises ConflictError instead of passing).
Member and payment-attempt rows are written only when they differ from what this repository
loaded or last wrote (a payment changes one member; rewriting all of them cost 2 statements
per member on every save).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from group_svc.adapters.pii import PiiKeyring
from group_svc.adapters.tables import (
    group_members,
    group_orders,
    group_payment_voids,
    group_payments_state,
    group_status_history,
)
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import (
    AttemptStatus,
    CartLine,
    FallbackPolicy,
    Group,
    Member,
    MemberStatus,
    PaymentAttempt,
    Role,
)
from group_svc.domain.split import ShareSpec, SplitMode
from mppo.platform import idempotency
from mppo.platform.errors import ConflictError


def spec_to_json(spec: ShareSpec) -> dict[str, Any]:
    """A ShareSpec as JSON."""
    return {
        "amount_minor": spec.amount_minor,
        "weight": spec.weight,
        "basis_points": spec.basis_points,
        "line_ids": list(spec.line_ids),
    }


def spec_from_json(data: dict[str, Any]) -> ShareSpec:
    """Inverse of spec_to_json."""
    return ShareSpec(
        amount_minor=data.get("amount_minor"),
        weight=data.get("weight"),
        basis_points=data.get("basis_points"),
        line_ids=tuple(data.get("line_ids") or ()),
    )


class GroupRepository:
    """Group persistence within one session/transaction."""

    def __init__(
        self,
        session: AsyncSession,
        keyring: PiiKeyring,
        track: Callable[[Group], None] = lambda group: None,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._track = track
        # what the database holds, as far as this transaction knows: member id / attempt row
        # id -> the columns `_write_children` would write
        self._members_written: dict[str, dict[str, Any]] = {}
        self._attempts_written: dict[Any, dict[str, Any]] = {}

    async def add(self, group: Group) -> None:
        """Insert a new group with its members."""
        await self._session.execute(insert(group_orders).values(**self._group_row(group)))
        group.version = 1
        await self._session.execute(
            update(group_orders).where(group_orders.c.group_id == group.group_id).values(version=1)
        )
        await self._write_children(group, new_members={m.member_id for m in group.members})
        self._track(group)

    def _remember(self, group: Group) -> None:
        for m in group.members:
            self._members_written[m.member_id] = self._member_state(m)
        for a in group.attempts:
            self._attempts_written[a.row_id] = self._attempt_state(a)

    async def get(self, group_id: str, *, lock: bool = False) -> Group | None:
        """Load a group (locking its row when `lock`), or None."""
        query = select(group_orders).where(group_orders.c.group_id == group_id)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).mappings().first()
        if row is None:
            return None
        members = (
            (
                await self._session.execute(
                    select(group_members)
                    .where(group_members.c.group_id == group_id)
                    .order_by(group_members.c.position)
                )
            )
            .mappings()
            .all()
        )
        attempts = (
            (
                await self._session.execute(
                    select(group_payments_state)
                    .where(group_payments_state.c.group_id == group_id)
                    .order_by(group_payments_state.c.member_id, group_payments_state.c.attempt)
                )
            )
            .mappings()
            .all()
        )
        group = Group(
            group_id=row["group_id"],
            host_user_id=row["host_user_id"],
            merchant_id=row["merchant_id"],
            currency_code=row["currency_code"],
            items=[CartLine(**item) for item in row["items"]],
            fees_minor=row["fees_minor"],
            tax_minor=row["tax_minor"],
            tip_minor=row["tip_minor"],
            split_mode=SplitMode(row["split_mode"]),
            fallback_policy=FallbackPolicy(row["fallback_policy"]),
            deadline=row["deadline"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            status=GroupStatus(row["status"]),
            members=[self._member(m) for m in members],
            attempts=[
                PaymentAttempt(
                    member_id=a["member_id"],
                    attempt=a["attempt"],
                    amount_minor=a["amount_minor"],
                    status=AttemptStatus(a["status"]),
                    payment_id=a["payment_id"],
                    payment_link=a["payment_link"],
                    captured=a["captured"],
                    row_id=a["row_id"],
                )
                for a in attempts
            ],
            version=row["version"],
            frozen_at=row["frozen_at"],
            order_id=row["order_id"],
            close_reason=row["close_reason"],
            grace_deadline=row["grace_deadline"],
            fallback_at=row["fallback_at"],
            fallback_notified_at=row["fallback_notified_at"],
            reminder_sent_at=row["reminder_sent_at"],
        )
        self._remember(group)
        self._track(group)
        return group

    async def version(self, group_id: str) -> int | None:
        """The group's current version (one indexed row), or None for an unknown group."""
        found = await self._session.execute(
            select(group_orders.c.version).where(group_orders.c.group_id == group_id)
        )
        return found.scalar()

    async def ids_for_user(
        self,
        user_id: str,
        status: GroupStatus | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        """(group id, created at) of groups `user_id` hosts or belongs to, newest first,
        strictly after the cursor `after` (created at, group id)."""
        member_of = select(group_members.c.group_id).where(group_members.c.user_id == user_id)
        query = select(group_orders.c.group_id, group_orders.c.created_at).where(
            or_(group_orders.c.host_user_id == user_id, group_orders.c.group_id.in_(member_of))
        )
        if status is not None:
            query = query.where(group_orders.c.status == status.value)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    group_orders.c.created_at < created,
                    and_(group_orders.c.created_at == created, group_orders.c.group_id < last_id),
                )
            )
        query = query.order_by(group_orders.c.created_at.desc(), group_orders.c.group_id.desc())
        rows = (await self._session.execute(query.limit(limit))).all()
        return [(row.group_id, row.created_at) for row in rows]

    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        """Lock (SKIP LOCKED) DRAFT/OPEN groups past their deadline or their host's grace."""
        due = await self._session.execute(
            select(group_orders.c.group_id)
            .where(
                group_orders.c.status.in_(["DRAFT", "OPEN"]),
                or_(
                    and_(group_orders.c.fallback_at.is_(None), group_orders.c.deadline <= now),
                    group_orders.c.grace_deadline <= now,
                ),
            )
            .order_by(group_orders.c.deadline)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(due.scalars().all())

    async def fallbacks_without_intent(self, limit: int) -> list[str]:
        """OPEN groups whose host fallback was applied but not announced yet."""
        rows = await self._session.execute(
            select(group_orders.c.group_id)
            .where(
                group_orders.c.status == "OPEN",
                group_orders.c.fallback_at.is_not(None),
                group_orders.c.fallback_notified_at.is_(None),
            )
            .limit(limit)
        )
        return list(rows.scalars().all())

    async def claim_reminders_due(self, now: datetime, lead: timedelta, limit: int) -> list[str]:
        """Lock (SKIP LOCKED) OPEN groups due a reminder: the deadline within `lead`, half of
        the payment window passed (never right after the invitation), none sent yet."""
        due = await self._session.execute(
            select(group_orders.c.group_id)
            .where(
                group_orders.c.status == "OPEN",
                group_orders.c.reminder_sent_at.is_(None),
                group_orders.c.fallback_at.is_(None),
                group_orders.c.deadline <= now + lead,
                group_orders.c.deadline > now,
                group_orders.c.frozen_at + (group_orders.c.deadline - group_orders.c.frozen_at) / 2
                <= now,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(due.scalars().all())

    async def members(self, group_id: str) -> list[Member]:
        """Just the members of a group, in join order ([] for an unknown group: a group always
        has its host). One query instead of the three of `get` (contact look-ups are frequent).
        """
        rows = await self._session.execute(
            select(group_members)
            .where(group_members.c.group_id == group_id)
            .order_by(group_members.c.position)
        )
        return [self._member(m) for m in rows.mappings().all()]

    def _member(self, row: Any) -> Member:
        key_id = row["pii_key_id"]
        email = self._keyring.decrypt(row["email_enc"], key_id) if row["email_enc"] else ""
        phone = self._keyring.decrypt(row["phone_enc"], key_id) if row["phone_enc"] else ""
        return Member(
            member_id=row["member_id"],
            position=row["position"],
            role=Role(row["role"]),
            display_name=row["display_name"],
            email=email,
            phone=phone,
            user_id=row["user_id"],
            share_spec=spec_from_json(row["share_spec"]),
            status=MemberStatus(row["status"]),
            invite_token=row["invite_token"],
            share_minor=row["share_minor"],
            paid_minor=row["paid_minor"],
            required=row["required"],
            attempt=row["attempt"],
            joined_at=row["joined_at"],
            paid_at=row["paid_at"],
        )

    async def save(self, group: Group, new_members: set[str] | None = None) -> None:
        """Write a changed group (version-checked) with its members, attempts and history."""
        values = self._group_row(group)
        values["version"] = group.version + 1
        result = await self._session.execute(
            update(group_orders)
            .where(
                group_orders.c.group_id == group.group_id,
                group_orders.c.version == group.version,
            )
            .values(**values)
            .returning(group_orders.c.version)
        )
        if result.first() is None:
            raise ConflictError(f"group {group.group_id} changed concurrently; retry")
        group.version += 1
        if group.removed_member_ids:
            await self._session.execute(
                delete(group_members).where(group_members.c.member_id.in_(group.removed_member_ids))
            )
            group.removed_member_ids.clear()
        await self._write_children(group, new_members or set())

    @staticmethod
    def _member_state(m: Member) -> dict[str, Any]:
        return {
            "display_name": m.display_name,
            "user_id": m.user_id,
            "status": m.status.value,
            "share_spec": spec_to_json(m.share_spec),
            "share_minor": m.share_minor,
            "paid_minor": m.paid_minor,
            "required": m.required,
            "attempt": m.attempt,
            "joined_at": m.joined_at,
            "paid_at": m.paid_at,
        }

    @staticmethod
    def _attempt_state(a: PaymentAttempt) -> dict[str, Any]:
        return {
            "status": a.status.value,
            "payment_id": a.payment_id,
            "payment_link": a.payment_link,
            "captured": a.captured,
            "amount_minor": a.amount_minor,
        }

    async def _write_children(self, group: Group, new_members: set[str]) -> None:
        for m in group.members:
            state = self._member_state(m)
            if m.member_id not in new_members and self._members_written.get(m.member_id) == state:
                continue
            if m.member_id in new_members:
                email, key_id = self._keyring.encrypt(m.email) if m.email else (None, "")
                phone, phone_key = self._keyring.encrypt(m.phone) if m.phone else (None, "")
                await self._session.execute(
                    insert(group_members).values(
                        member_id=m.member_id,
                        group_id=group.group_id,
                        position=m.position,
                        role=m.role.value,
                        email_enc=email,
                        phone_enc=phone,
                        pii_key_id=key_id or phone_key or self._keyring.active_key_id,
                        invite_token=m.invite_token,
                        **state,
                    )
                )
            else:
                await self._session.execute(
                    update(group_members)
                    .where(group_members.c.member_id == m.member_id)
                    .values(**state)
                )
            self._members_written[m.member_id] = state
        for a in group.attempts:
            attempt_state = self._attempt_state(a)
            if self._attempts_written.get(a.row_id) == attempt_state:
                continue
            row = {**attempt_state, "updated_at": group.updated_at}
            await self._session.execute(
                pg_insert(group_payments_state)
                .values(
                    row_id=a.row_id,
                    group_id=group.group_id,
                    member_id=a.member_id,
                    attempt=a.attempt,
                    **row,
                )
                .on_conflict_do_update(index_elements=["row_id"], set_=row)
            )
            self._attempts_written[a.row_id] = attempt_state
        for h in group.new_history:
            await self._session.execute(
                insert(group_status_history).values(
                    group_id=group.group_id,
                    from_status=h.from_status.value if h.from_status else None,
                    to_status=h.to_status.value,
                    reason=h.reason,
                    actor=h.actor,
                    changed_at=h.at,
                )
            )
        group.new_history.clear()

    @staticmethod
    def _group_row(group: Group) -> dict[str, Any]:
        return {
            "group_id": group.group_id,
            "host_user_id": group.host_user_id,
            "merchant_id": group.merchant_id,
            "currency_code": group.currency_code,
            "items": [
                {
                    "line_id": line.line_id,
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_minor": line.unit_price_minor,
                }
                for line in group.items
            ],
            "fees_minor": group.fees_minor,
            "tax_minor": group.tax_minor,
            "tip_minor": group.tip_minor,
            "total_minor": group.total_minor,
            "split_mode": group.split_mode.value,
            "fallback_policy": group.fallback_policy.value,
            "deadline": group.deadline,
            "status": group.status.value,
            "version": group.version,
            "frozen_at": group.frozen_at,
            "order_id": group.order_id,
            "close_reason": group.close_reason,
            "grace_deadline": group.grace_deadline,
            "fallback_at": group.fallback_at,
            "fallback_notified_at": group.fallback_notified_at,
            "reminder_sent_at": group.reminder_sent_at,
            "created_at": group.created_at,
            "updated_at": group.updated_at,
        }

    async def history(self, group_id: str) -> list[Any]:
        """Every status change of a group, oldest first."""
        rows = await self._session.execute(
            select(group_status_history)
            .where(group_status_history.c.group_id == group_id)
            .order_by(group_status_history.c.id)
        )
        return list(rows.mappings().all())


@dataclass(frozen=True)
class Release:
    """A payment the group does not keep, waiting to be voided (or refunded)."""

    payment_id: str
    group_id: str
    captured: bool
    reason: str
    attempts: int


class ReleaseQueue:
    """group_payment_voids: payments to release, claimed with SKIP LOCKED.

    Status: PENDING (to do; `next_attempt_at` backs off after a transient failure), DONE
    (released), REFUSED (the payment service refused for good; `last_error` says why).
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self, group_id: str, payment_id: str, captured: bool, reason: str, now: datetime
    ) -> None:
        """Queue a payment for release (once per payment)."""
        await self._session.execute(
            pg_insert(group_payment_voids)
            .values(
                payment_id=payment_id,
                group_id=group_id,
                captured=captured,
                reason=reason,
                status="PENDING",
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["payment_id"])
        )

    async def claim_due(self, now: datetime, limit: int) -> Sequence[Release]:
        """Lock (SKIP LOCKED) pending releases whose back-off has passed, oldest first."""
        c = group_payment_voids.c
        rows = await self._session.execute(
            select(c.payment_id, c.group_id, c.captured, c.reason, c.attempts)
            .where(
                c.status == "PENDING",
                or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
            )
            .order_by(c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [Release(**row) for row in rows.mappings().all()]

    async def done(self, payment_id: str, now: datetime) -> None:
        """The payment was released."""
        await self._finish(payment_id, "DONE", now, None)

    async def refused(self, payment_id: str, now: datetime, error: str) -> None:
        """The payment service refused for good: stop retrying, keep its answer."""
        await self._finish(payment_id, "REFUSED", now, error)

    async def retry_later(self, payment_id: str, at: datetime, error: str) -> None:
        """A transient failure: count it and try again at `at`."""
        await self._session.execute(
            update(group_payment_voids)
            .where(group_payment_voids.c.payment_id == payment_id)
            .values(
                attempts=group_payment_voids.c.attempts + 1,
                last_error=error[:1000],
                next_attempt_at=at,
            )
        )

    async def _finish(self, payment_id: str, status: str, now: datetime, error: str | None) -> None:
        values: dict[str, Any] = {"status": status, "done_at": now}
        if error is not None:
            values["last_error"] = error[:1000]
        await self._session.execute(
            update(group_payment_voids)
            .where(group_payment_voids.c.payment_id == payment_id)
            .values(**values)
        )


class IdempotencyKeys:
    """Idempotency keys of mutating calls, claimed in the call's own transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, key: idempotency.IdempotencyKey) -> bytes | None:
        """None for the first call with `key`; the stored response of the first otherwise."""
        return await idempotency.claim(self._session, key)

    async def complete(self, key: idempotency.IdempotencyKey, response: bytes) -> None:
        """Store the first call's response (committed with the change)."""
        await idempotency.complete(self._session, key, response)
