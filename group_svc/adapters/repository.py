"""Every SQL statement of the group service: the Group aggregate, the queue of payments to
release, and the idempotency keys of mutating calls.

`GroupRepository` loads and saves the Group aggregate; a loaded group can be locked for the
transaction, and every group it hands out is tracked by the unit of work (which publishes the
events the group records).

Every change of a group runs under ``SELECT … FOR UPDATE`` of its group_orders row (so two
replicas handling events for the same group serialize), and `save` additionally checks and
bumps the optimistic `version` (a lost update raises ConflictError instead of passing).

Round trips. The aggregate's statements are written once, below, and run as driver SQL on the
session's connection (no statement construction, compilation or cache key per call; asyncpg
prepares each once per connection):

* `get` is one statement: the group row with its members and payment attempts as arrays of
  rows. Locked, the row is the latest version (the lock waits for a concurrent change) while
  the arrays come from the statement's snapshot; the statement also reads the version its
  snapshot saw, and when the two differ (it waited for another transaction's change) it is
  read again, now under the lock, with a fresh snapshot.
* `add` and `save` are one statement each: the group row (inserted, or updated where the
  version matches) and, in data-modifying CTEs over ``unnest`` of parallel arrays, the member
  rows to insert or update, the payment attempts to upsert and the history to append — all
  guarded by the group row having been written. Member and attempt rows are sent only when
  they differ from what this repository loaded or last wrote (a payment changes one member).
  Removed members are deleted first (one statement, RemoveMember only).
* The cart (items), the group id and its creation time never change after `add`; `save`
  writes the other columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from group_svc.adapters.pii import PiiKeyring
from group_svc.adapters.tables import (
    group_members,
    group_orders,
    group_payment_voids,
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
from mppo.platform.schema import idempotency_keys


class Sql:
    """A statement written once: ``{name}`` placeholders become asyncpg's ``$n`` (numbered in
    order of first appearance), and `args` orders a call's values accordingly."""

    __slots__ = ("names", "text")

    def __init__(self, template: str) -> None:
        names = list(dict.fromkeys(re.findall(r"\{(\w+)\}", template)))
        self.names: tuple[str, ...] = tuple(names)
        numbered = template.format_map({n: f"${i}" for i, n in enumerate(names, 1)})
        self.text = " ".join(numbered.split())

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional parameters, from `values` by name."""
        return tuple(values[name] for name in self.names)


_SELECT_GROUP = """
SELECT g.*,
    ARRAY(SELECT m FROM group_members m WHERE m.group_id = {group_id}
          ORDER BY m.position) AS members,
    ARRAY(SELECT a FROM group_payments_state a WHERE a.group_id = {group_id}
          ORDER BY a.member_id, a.attempt) AS attempts
"""
GET_GROUP = Sql(_SELECT_GROUP + "FROM group_orders g WHERE g.group_id = {group_id}")
# `seen_version`: the version in the statement's snapshot (see the module docstring)
GET_GROUP_LOCKED = Sql(
    _SELECT_GROUP
    + """, (SELECT s.version FROM group_orders s WHERE s.group_id = {group_id}) AS seen_version
    FROM group_orders g WHERE g.group_id = {group_id} FOR UPDATE OF g"""
)
GROUP_VERSION = Sql("SELECT version FROM group_orders WHERE group_id = {group_id}")
GROUP_MEMBERS = Sql("SELECT * FROM group_members WHERE group_id = {group_id} ORDER BY position")
DELETE_MEMBERS = Sql(
    "DELETE FROM group_members WHERE group_id = {group_id} AND member_id = ANY({member_ids})"
)

# the children of a written group (CTE `g`), each a no-op for empty arrays
_CHILDREN = """
, changed_members AS (
    UPDATE group_members AS m
    SET display_name = u.display_name, user_id = u.user_id, status = u.status,
        share_spec = u.share_spec::jsonb, share_minor = u.share_minor,
        paid_minor = u.paid_minor, required = u.required, attempt = u.attempt,
        joined_at = u.joined_at, paid_at = u.paid_at, provider = u.provider
    FROM unnest({m_member_id}::text[], {m_display_name}::text[], {m_user_id}::text[],
                {m_status}::text[], {m_share_spec}::text[], {m_share_minor}::bigint[],
                {m_paid_minor}::bigint[], {m_required}::boolean[], {m_attempt}::integer[],
                {m_joined_at}::timestamptz[], {m_paid_at}::timestamptz[], {m_provider}::text[])
        AS u(member_id, display_name, user_id, status, share_spec, share_minor, paid_minor,
             required, attempt, joined_at, paid_at, provider)
    WHERE m.member_id = u.member_id AND m.group_id = {group_id}::text
      AND EXISTS (SELECT FROM g)
), new_members AS (
    INSERT INTO group_members (member_id, group_id, position, role, display_name, user_id,
        email_enc, phone_enc, pii_key_id, status, share_spec, share_minor, paid_minor,
        required, attempt, invite_token, joined_at, paid_at, provider)
    SELECT u.member_id, {group_id}::text, u.position, u.role, u.display_name, u.user_id,
        u.email_enc, u.phone_enc, u.pii_key_id, u.status, u.share_spec::jsonb, u.share_minor,
        u.paid_minor, u.required, u.attempt, u.invite_token, u.joined_at, u.paid_at,
        u.provider
    FROM unnest({n_member_id}::text[], {n_position}::integer[], {n_role}::text[],
                {n_display_name}::text[], {n_user_id}::text[], {n_email_enc}::bytea[],
                {n_phone_enc}::bytea[], {n_pii_key_id}::text[], {n_status}::text[],
                {n_share_spec}::text[], {n_share_minor}::bigint[], {n_paid_minor}::bigint[],
                {n_required}::boolean[], {n_attempt}::integer[], {n_invite_token}::text[],
                {n_joined_at}::timestamptz[], {n_paid_at}::timestamptz[], {n_provider}::text[])
        AS u(member_id, position, role, display_name, user_id, email_enc, phone_enc,
             pii_key_id, status, share_spec, share_minor, paid_minor, required, attempt,
             invite_token, joined_at, paid_at, provider)
    WHERE EXISTS (SELECT FROM g)
), attempts AS (
    INSERT INTO group_payments_state (row_id, group_id, member_id, attempt, amount_minor,
        status, payment_id, payment_link, captured, updated_at)
    SELECT u.row_id, {group_id}::text, u.member_id, u.attempt, u.amount_minor, u.status,
        u.payment_id, u.payment_link, u.captured, {updated_at}::timestamptz
    FROM unnest({a_row_id}::text[], {a_member_id}::text[], {a_attempt}::integer[],
                {a_amount_minor}::bigint[], {a_status}::text[], {a_payment_id}::text[],
                {a_payment_link}::text[], {a_captured}::boolean[])
        AS u(row_id, member_id, attempt, amount_minor, status, payment_id, payment_link,
             captured)
    WHERE EXISTS (SELECT FROM g)
    ON CONFLICT (row_id) DO UPDATE SET amount_minor = excluded.amount_minor,
        status = excluded.status, payment_id = excluded.payment_id,
        payment_link = excluded.payment_link, captured = excluded.captured,
        updated_at = excluded.updated_at
), history AS (
    INSERT INTO group_status_history (group_id, from_status, to_status, reason, actor,
        changed_at)
    SELECT {group_id}::text, u.from_status, u.to_status, u.reason, u.actor, u.changed_at
    FROM unnest({h_from_status}::text[], {h_to_status}::text[], {h_reason}::text[],
                {h_actor}::text[], {h_changed_at}::timestamptz[]) WITH ORDINALITY
        AS u(from_status, to_status, reason, actor, changed_at, n)
    WHERE EXISTS (SELECT FROM g)
    ORDER BY u.n
)
SELECT version FROM g
"""

ADD_GROUP = Sql(
    """
WITH g AS (
    INSERT INTO group_orders (group_id, host_user_id, merchant_id, currency_code, items,
        fees_minor, tax_minor, tip_minor, total_minor, split_mode, fallback_policy, deadline,
        status, version, frozen_at, order_id, close_reason, grace_deadline, fallback_at,
        fallback_notified_at, reminder_sent_at, created_at, updated_at, due_reason)
    VALUES ({group_id}, {host_user_id}, {merchant_id}, {currency_code}, {items}::text::jsonb,
        {fees_minor}, {tax_minor}, {tip_minor}, {total_minor}, {split_mode},
        {fallback_policy}, {deadline}, {status}, {version}, {frozen_at}, {order_id},
        {close_reason}, {grace_deadline}, {fallback_at}, {fallback_notified_at},
        {reminder_sent_at}, {created_at}, {updated_at}, {due_reason})
    RETURNING version
)"""
    + _CHILDREN
)

SAVE_GROUP = Sql(
    """
WITH g AS (
    UPDATE group_orders
    SET host_user_id = {host_user_id}, merchant_id = {merchant_id},
        currency_code = {currency_code}, fees_minor = {fees_minor}, tax_minor = {tax_minor},
        tip_minor = {tip_minor}, total_minor = {total_minor}, split_mode = {split_mode},
        fallback_policy = {fallback_policy}, deadline = {deadline}, status = {status},
        version = {version} + 1, frozen_at = {frozen_at}, order_id = {order_id},
        close_reason = {close_reason}, grace_deadline = {grace_deadline},
        fallback_at = {fallback_at}, fallback_notified_at = {fallback_notified_at},
        reminder_sent_at = {reminder_sent_at}, updated_at = {updated_at},
        due_reason = {due_reason}
    WHERE group_id = {group_id} AND version = {version}
    RETURNING version
)"""
    + _CHILDREN
)

STORE_COMPLETED_KEY = Sql(
    f"""INSERT INTO {idempotency_keys.name} (scope, key, request_hash, status, response)
    VALUES ({{scope}}, {{key}}, {{request_hash}}, 'completed', {{response}})
    ON CONFLICT (scope, key) DO NOTHING RETURNING key"""
)
KEY_EXISTS = Sql(
    f"SELECT true FROM {idempotency_keys.name} WHERE scope = {{scope}} AND key = {{key}}"
)
SCHEDULER_DUTIES = Sql(
    """
SELECT
    EXISTS (SELECT FROM group_orders WHERE status IN ('DRAFT', 'OPEN')
            AND ((fallback_at IS NULL AND deadline <= {now}::timestamptz)
                 OR grace_deadline <= {now}::timestamptz)) AS due,
    EXISTS (SELECT FROM group_orders WHERE status = 'OPEN' AND fallback_at IS NOT NULL
            AND fallback_notified_at IS NULL) AS fallbacks,
    EXISTS (SELECT FROM group_orders WHERE status = 'OPEN' AND reminder_sent_at IS NULL
            AND fallback_at IS NULL AND deadline <= {now}::timestamptz + {lead}::interval
            AND deadline > {now}::timestamptz
            AND frozen_at + (deadline - frozen_at) / 2 <= {now}::timestamptz) AS reminders,
    EXISTS (SELECT FROM group_payment_voids WHERE status = 'PENDING'
            AND (next_attempt_at IS NULL OR next_attempt_at <= {now}::timestamptz)) AS releases
"""
)


class _Statements:
    """Runs the statements above on a session's connection, in its transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._conn: AsyncConnection | None = None

    async def _run(self, sql: Sql, values: Mapping[str, Any]) -> Result[Any]:
        conn = self._conn
        if conn is None or conn.closed:  # a commit or rollback gave the connection back
            conn = self._conn = await self._session.connection()
        return await conn.exec_driver_sql(sql.text, sql.args(values))


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


def _json(value: Any) -> Any:
    """A jsonb value as decoded (the engine's codec parses it; a bare connection gives text)."""
    return json.loads(value) if isinstance(value, str) else value


class GroupRepository(_Statements):
    """Group persistence within one session/transaction."""

    def __init__(
        self,
        session: AsyncSession,
        keyring: PiiKeyring,
        track: Callable[[Group], None] = lambda group: None,
    ) -> None:
        super().__init__(session)
        self._keyring = keyring
        self._track = track
        # what the database holds, as far as this transaction knows: member id / attempt row
        # id -> the columns `save` would write
        self._members_written: dict[str, dict[str, Any]] = {}
        self._attempts_written: dict[Any, dict[str, Any]] = {}

    async def add(self, group: Group) -> None:
        """Insert a new group (version 1) with its members and history: one statement."""
        values = self._group_values(group)
        values["version"] = 1
        values["items"] = json.dumps(
            [
                {
                    "line_id": line.line_id,
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_minor": line.unit_price_minor,
                }
                for line in group.items
            ]
        )
        written = self._children(group, {m.member_id for m in group.members}, values)
        await self._run(ADD_GROUP, values)
        group.version = 1
        self._written(group, *written)
        self._track(group)

    async def get(self, group_id: str, *, lock: bool = False) -> Group | None:
        """Load a group (locking its row when `lock`), or None: one statement (two when the
        lock had to wait for a concurrent change)."""
        values = {"group_id": group_id}
        if lock:
            row = (await self._run(GET_GROUP_LOCKED, values)).mappings().first()
            if row is not None and row["seen_version"] != row["version"]:
                # the lock waited for another transaction's change: read it all under the lock
                row = (await self._run(GET_GROUP_LOCKED, values)).mappings().first()
        else:
            row = (await self._run(GET_GROUP, values)).mappings().first()
        if row is None:
            return None
        group = Group(
            group_id=row["group_id"],
            host_user_id=row["host_user_id"],
            merchant_id=row["merchant_id"],
            currency_code=row["currency_code"],
            items=[CartLine(**item) for item in _json(row["items"])],
            fees_minor=row["fees_minor"],
            tax_minor=row["tax_minor"],
            tip_minor=row["tip_minor"],
            split_mode=SplitMode(row["split_mode"]),
            fallback_policy=FallbackPolicy(row["fallback_policy"]),
            deadline=row["deadline"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            status=GroupStatus(row["status"]),
            members=[self._member(m) for m in row["members"]],
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
                for a in row["attempts"]
            ],
            version=row["version"],
            frozen_at=row["frozen_at"],
            order_id=row["order_id"],
            close_reason=row["close_reason"],
            grace_deadline=row["grace_deadline"],
            fallback_at=row["fallback_at"],
            fallback_notified_at=row["fallback_notified_at"],
            reminder_sent_at=row["reminder_sent_at"],
            due_reason=row["due_reason"],
        )
        for m in group.members:
            self._members_written[m.member_id] = self._member_state(m)
        for a in group.attempts:
            self._attempts_written[a.row_id] = self._attempt_state(a)
        self._track(group)
        return group

    async def version(self, group_id: str) -> int | None:
        """The group's current version (one indexed row), or None for an unknown group."""
        found: int | None = (await self._run(GROUP_VERSION, {"group_id": group_id})).scalar()
        return found

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

    async def duties(self, now: datetime, lead: timedelta) -> Duties:
        """Which of the expiry scheduler's duties have work now, in one read (the conditions
        of `claim_due`, `fallbacks_without_intent`, `claim_reminders_due` and
        `ReleaseQueue.claim_due`): an idle round costs this statement and nothing else."""
        row = (await self._run(SCHEDULER_DUTIES, {"now": now, "lead": lead})).one()
        return Duties(
            expiry=row.due or row.fallbacks, reminders=row.reminders, releases=row.releases
        )

    async def members(self, group_id: str) -> list[Member]:
        """Just the members of a group, in join order ([] for an unknown group: a group always
        has its host). Lighter than `get` (contact look-ups are frequent).
        """
        rows = (await self._run(GROUP_MEMBERS, {"group_id": group_id})).mappings().all()
        return [self._member(m) for m in rows]

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
            share_spec=spec_from_json(_json(row["share_spec"])),
            status=MemberStatus(row["status"]),
            invite_token=row["invite_token"],
            share_minor=row["share_minor"],
            paid_minor=row["paid_minor"],
            required=row["required"],
            attempt=row["attempt"],
            joined_at=row["joined_at"],
            paid_at=row["paid_at"],
            provider=row["provider"],
        )

    async def save(self, group: Group, new_members: set[str] | None = None) -> None:
        """Write a changed group (version-checked) with its members, attempts and history:
        one statement (and the delete of removed members before it)."""
        if group.removed_member_ids:
            await self._run(
                DELETE_MEMBERS,
                {"group_id": group.group_id, "member_ids": list(group.removed_member_ids)},
            )
        values = self._group_values(group)
        written = self._children(group, new_members or set(), values)
        if (await self._run(SAVE_GROUP, values)).first() is None:
            raise ConflictError(f"group {group.group_id} changed concurrently; retry")
        group.version += 1
        group.removed_member_ids.clear()
        self._written(group, *written)

    @staticmethod
    def _member_state(m: Member) -> dict[str, Any]:
        return {
            "display_name": m.display_name,
            "user_id": m.user_id,
            "status": m.status.value,
            "share_spec": json.dumps(spec_to_json(m.share_spec)),
            "share_minor": m.share_minor,
            "paid_minor": m.paid_minor,
            "required": m.required,
            "attempt": m.attempt,
            "joined_at": m.joined_at,
            "paid_at": m.paid_at,
            "provider": m.provider,
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

    def _children(
        self, group: Group, new_members: set[str], values: dict[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Put the member, attempt and history rows to write into `values` (parallel arrays,
        only rows that differ from what the database holds); the states to remember once
        written."""
        members: dict[str, dict[str, Any]] = {}
        changed: list[tuple[Member, dict[str, Any]]] = []
        added: list[tuple[Member, dict[str, Any]]] = []
        for m in group.members:
            state = self._member_state(m)
            if m.member_id in new_members:
                added.append((m, state))
            elif self._members_written.get(m.member_id) != state:
                changed.append((m, state))
            else:
                continue
            members[m.member_id] = state
        values["m_member_id"] = [m.member_id for m, _ in changed]
        values["n_member_id"] = [m.member_id for m, _ in added]
        for column in _MEMBER_STATE:
            values[f"m_{column}"] = [state[column] for _, state in changed]
            values[f"n_{column}"] = [state[column] for _, state in added]
        values["n_position"] = [m.position for m, _ in added]
        values["n_role"] = [m.role.value for m, _ in added]
        values["n_invite_token"] = [m.invite_token for m, _ in added]
        emails: list[bytes | None] = []
        phones: list[bytes | None] = []
        key_ids: list[str] = []
        for m, _ in added:
            email, key_id = self._keyring.encrypt(m.email) if m.email else (None, "")
            phone, phone_key = self._keyring.encrypt(m.phone) if m.phone else (None, "")
            emails.append(email)
            phones.append(phone)
            key_ids.append(key_id or phone_key or self._keyring.active_key_id)
        values["n_email_enc"] = emails
        values["n_phone_enc"] = phones
        values["n_pii_key_id"] = key_ids

        attempts: dict[str, dict[str, Any]] = {}
        rows: list[PaymentAttempt] = []
        for a in group.attempts:
            state = self._attempt_state(a)
            if self._attempts_written.get(a.row_id) != state:
                attempts[a.row_id] = state
                rows.append(a)
        values["a_row_id"] = [a.row_id for a in rows]
        values["a_member_id"] = [a.member_id for a in rows]
        values["a_attempt"] = [a.attempt for a in rows]
        values["a_amount_minor"] = [a.amount_minor for a in rows]
        values["a_status"] = [a.status.value for a in rows]
        values["a_payment_id"] = [a.payment_id for a in rows]
        values["a_payment_link"] = [a.payment_link for a in rows]
        values["a_captured"] = [a.captured for a in rows]

        history = group.new_history
        values["h_from_status"] = [h.from_status.value if h.from_status else None for h in history]
        values["h_to_status"] = [h.to_status.value for h in history]
        values["h_reason"] = [h.reason for h in history]
        values["h_actor"] = [h.actor for h in history]
        values["h_changed_at"] = [h.at for h in history]
        return members, attempts

    def _written(
        self,
        group: Group,
        members: dict[str, dict[str, Any]],
        attempts: dict[str, dict[str, Any]],
    ) -> None:
        self._members_written.update(members)
        self._attempts_written.update(attempts)
        group.new_history.clear()

    @staticmethod
    def _group_values(group: Group) -> dict[str, Any]:
        return {
            "group_id": group.group_id,
            "host_user_id": group.host_user_id,
            "merchant_id": group.merchant_id,
            "currency_code": group.currency_code,
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
            "due_reason": group.due_reason,
            "created_at": group.created_at,
            "updated_at": group.updated_at,
        }

    async def history(
        self, group_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Any]:
        """A group's status changes, oldest first: the `limit` first after the change `after`
        (keyset on the history row's id)."""
        rows = await self._session.execute(
            select(group_status_history)
            .where(group_status_history.c.group_id == group_id)
            .where(group_status_history.c.id > after)
            .order_by(group_status_history.c.id)
            .limit(limit)
        )
        return list(rows.mappings().all())


#: the member columns `save` compares and writes (besides the id)
_MEMBER_STATE = (
    "display_name",
    "user_id",
    "status",
    "share_spec",
    "share_minor",
    "paid_minor",
    "required",
    "attempt",
    "joined_at",
    "paid_at",
    "provider",
)


@dataclass(frozen=True)
class Duties:
    """Which of the expiry scheduler's duties have work (GroupRepository.duties)."""

    expiry: bool
    reminders: bool
    releases: bool


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


class IdempotencyKeys(_Statements):
    """Idempotency keys of mutating calls, claimed in the call's own transaction."""

    async def claim(self, key: idempotency.IdempotencyKey) -> bytes | None:
        """None for the first call with `key`; the stored response of the first otherwise."""
        return await idempotency.claim(self._session, key)

    async def complete(self, key: idempotency.IdempotencyKey, response: bytes) -> None:
        """Store the first call's response (committed with the change)."""
        await idempotency.complete(self._session, key, response)

    async def lookup(self, key: idempotency.IdempotencyKey) -> bytes | None:
        """The stored response of an earlier call with `key`, or None; claims nothing (for the
        check made before the call's own transaction). Refuses the key like `claim` when it
        was used with other parameters."""
        values = {"scope": key.scope, "key": key.key}
        if (await self._run(KEY_EXISTS, values)).first() is None:
            return None
        return await idempotency.claim(self._session, key)  # the stored answer, or the refusal

    async def store(self, key: idempotency.IdempotencyKey, response: bytes) -> bytes | None:
        """Claim `key` with the response already known (one statement instead of `claim` and
        `complete`); None when stored, else the response an earlier call with `key` stored
        (waiting for it like `claim`), or the refusal when it had other parameters."""
        values = {
            "scope": key.scope,
            "key": key.key,
            "request_hash": key.request_hash,
            "response": response,
        }
        if (await self._run(STORE_COMPLETED_KEY, values)).first() is not None:
            return None
        return await idempotency.claim(self._session, key)
