"""Loads and saves the Group aggregate; a loaded group can be locked for the transaction.

Every change of a group runs under ``SELECT … FOR UPDATE`` of its group_orders row (so two
replicas handling events for the same group serialize), and `save` additionally checks and
bumps the optimistic `version` (a lost update raises ConflictError instead of passing).
Member and payment-attempt rows are written only when they differ from what this repository
loaded or last wrote (a payment changes one member; rewriting all of them cost 2 statements
per member on every save).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
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

    def __init__(self, session: AsyncSession, keyring: PiiKeyring) -> None:
        self._session = session
        self._keyring = keyring
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
        return group

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

    async def enqueue_void(
        self, group_id: str, payment_id: str, captured: bool, reason: str, now: datetime
    ) -> None:
        """Ask the void worker to release a payment the group does not keep (once)."""
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

    async def history(self, group_id: str) -> list[Any]:
        """Every status change of a group, oldest first."""
        rows = await self._session.execute(
            select(group_status_history)
            .where(group_status_history.c.group_id == group_id)
            .order_by(group_status_history.c.id)
        )
        return list(rows.mappings().all())
