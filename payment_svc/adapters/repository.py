"""Loading and saving payments, provider id mappings, webhook events and closed groups.

:class:`PaymentRepository` is what the service layer may ask for; :class:`SqlPaymentRepository`
answers it inside the unit of work's transaction (the only SQL of the service outside its
migrations). Every payment it hands out or adds is given to ``track`` (the unit of work's), so
the events the payment records reach the outbox when the unit of work commits.

Every statement is built once, at import, with bind parameters (SQLAlchemy's compiled cache then
hits without rebuilding a cache key), and runs on the transaction's Core connection. Writes that
nothing reads back before the commit (:meth:`PaymentRepository.save`, ``schedule_check``,
``map_provider_id``, ``webhook_outcome``) are queued and written by :meth:`flush` as one
statement; the unit of work flushes before it commits, and the repository flushes before any
other statement, so the order in which statements reach Postgres is the order of the calls.
A unit of work whose only statement is a read (``get(..., alone=True)``) or the insert of a new
payment (``add``) runs it on its own, in autocommit: no BEGIN and COMMIT / ROLLBACK around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Text, any_, bindparam, func, literal_column, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from payment_svc.adapters.tables import (
    closed_groups,
    payments,
    webhook_events,
)
from payment_svc.domain.model import Payment, PaymentStatus

_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}

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

#: the columns a Payment is made of, and compensate_reason (read with the row lock)
_PAYMENT_COLUMNS = (
    payments.c.payment_id,
    payments.c.group_id,
    payments.c.member_id,
    payments.c.attempt,
    payments.c.amount_minor,
    payments.c.currency_code,
    payments.c.provider,
    payments.c.status,
    payments.c.provider_payment_id,
    payments.c.provider_checkout_id,
    payments.c.payment_link,
    payments.c.description,
    payments.c.amount_authorized_minor,
    payments.c.amount_captured_minor,
    payments.c.amount_refunded_minor,
    payments.c.failure_reason,
    payments.c.authorization_expires_at,
    payments.c.compensate_reason,
    payments.c.created_at,
    payments.c.updated_at,
)
_PAYMENT_SQL = ", ".join(f"p.{c.name}" for c in _PAYMENT_COLUMNS)

_GET = select(*_PAYMENT_COLUMNS).where(payments.c.payment_id == bindparam("payment_id"))
_GET_LOCKED = _GET.with_for_update()
_GET_ATTEMPT = select(*_PAYMENT_COLUMNS).where(
    payments.c.group_id == bindparam("group_id"),
    payments.c.member_id == bindparam("member_id"),
    payments.c.attempt == bindparam("attempt"),
)
_LIST_GROUP = (
    select(*_PAYMENT_COLUMNS)
    .where(payments.c.group_id == bindparam("group_id"))
    .order_by(payments.c.created_at, payments.c.payment_id)
)

#: a new payment with its first check, unless its attempt exists or its group is closed
_ADD = text(
    """
    INSERT INTO payments (payment_id, group_id, member_id, attempt, amount_minor, currency_code,
                          provider, status, description, return_url, payer_user_id,
                          next_check_at, checks)
    SELECT CAST(:payment_id AS text), CAST(:group_id AS text), CAST(:member_id AS text),
           CAST(:attempt AS integer), CAST(:amount_minor AS bigint), CAST(:currency_code AS text),
           CAST(:provider AS text), CAST(:status AS text), CAST(:description AS text),
           CAST(:return_url AS text), CAST(:payer_user_id AS text),
           CAST(:next_check_at AS timestamptz), 0
    WHERE NOT EXISTS (SELECT FROM closed_groups WHERE group_id = CAST(:group_id AS text))
    ON CONFLICT ON CONSTRAINT uq_payments_attempt DO NOTHING
    RETURNING payment_id, created_at, updated_at
    """
)

#: a verified webhook stored once, the payments its provider ids name, and (when it is new and
#: they name exactly one) that payment locked, in one round trip
_RECEIVE_WEBHOOK = text(
    f"""
    WITH fresh AS (
        INSERT INTO webhook_events (provider, event_id, event_type, provider_payment_id,
                                    outcome, body)
        VALUES (CAST(:provider AS text), CAST(:event_id AS text), CAST(:event_type AS text),
                CAST(:provider_payment_id AS text), 'received', CAST(:body AS text))
        ON CONFLICT (provider, event_id) DO NOTHING
        RETURNING event_id
    ), known AS (
        SELECT provider_payment_id, payment_id FROM provider_payment_map
        WHERE provider = CAST(:provider AS text)
          AND provider_payment_id = ANY(CAST(:ids AS text[]))
    ), owner AS (
        SELECT {_PAYMENT_SQL} FROM payments p
        WHERE p.payment_id = (SELECT min(payment_id) FROM known
                              HAVING count(DISTINCT payment_id) = 1)
          AND EXISTS (SELECT FROM fresh)
        FOR UPDATE
    )
    SELECT EXISTS (SELECT FROM fresh) AS fresh,
           ARRAY(SELECT provider_payment_id FROM known ORDER BY 1) AS known_ids,
           ARRAY(SELECT payment_id FROM known ORDER BY provider_payment_id) AS known_payments,
           owner.*
    FROM (SELECT) AS one LEFT JOIN owner ON true
    """
)

_RECORD_WEBHOOK = (
    pg_insert(webhook_events)
    .values(
        provider=bindparam("provider"),
        event_id=bindparam("event_id"),
        event_type=bindparam("event_type"),
        provider_payment_id=bindparam("provider_payment_id"),
        outcome="received",
        body=bindparam("body"),
    )
    .on_conflict_do_nothing(index_elements=["provider", "event_id"])
    .returning(webhook_events.c.event_id)
)

#: the hosted page of a payment that has none yet, its history row(s) and its provider ids
_ATTACH_CHECKOUT = text(
    f"""
    WITH attached AS (
        UPDATE payments AS p SET
            provider_payment_id = CAST(:provider_payment_id AS text),
            provider_checkout_id = CAST(:provider_checkout_id AS text),
            payment_link = CAST(:payment_link AS text),
            authorization_expires_at = COALESCE(CAST(:authorization_expires_at AS timestamptz),
                                                p.authorization_expires_at),
            updated_at = now()
        WHERE p.payment_id = CAST(:payment_id AS text) AND p.payment_link = ''
        RETURNING {_PAYMENT_SQL}
    ), history AS (
        INSERT INTO payment_status_history (payment_id, from_status, to_status, reason, actor)
        SELECT a.payment_id, h.from_status, h.to_status, h.reason, h.actor
        FROM attached AS a,
             unnest(CAST(:h_from AS text[]), CAST(:h_to AS text[]), CAST(:h_reason AS text[]),
                    CAST(:h_actor AS text[])) WITH ORDINALITY
                 AS h(from_status, to_status, reason, actor, n)
        ORDER BY h.n
    ), mapped AS (
        INSERT INTO provider_payment_map (provider, provider_payment_id, payment_id)
        SELECT a.provider, m.provider_payment_id, a.payment_id
        FROM attached AS a, unnest(CAST(:provider_ids AS text[])) AS m(provider_payment_id)
        ON CONFLICT DO NOTHING
    )
    SELECT * FROM attached
    """
)

#: everything queued by save, schedule_check, map_provider_id and webhook_outcome, at once
_FLUSH = text(
    """
    WITH changed AS (
        UPDATE payments AS p SET
            status = CASE WHEN v.fields THEN v.status ELSE p.status END,
            provider_payment_id =
                CASE WHEN v.fields THEN v.provider_payment_id ELSE p.provider_payment_id END,
            provider_checkout_id =
                CASE WHEN v.fields THEN v.provider_checkout_id ELSE p.provider_checkout_id END,
            payment_link = CASE WHEN v.fields THEN v.payment_link ELSE p.payment_link END,
            amount_authorized_minor = CASE WHEN v.fields THEN v.amount_authorized_minor
                                           ELSE p.amount_authorized_minor END,
            amount_captured_minor = CASE WHEN v.fields THEN v.amount_captured_minor
                                         ELSE p.amount_captured_minor END,
            amount_refunded_minor = CASE WHEN v.fields THEN v.amount_refunded_minor
                                         ELSE p.amount_refunded_minor END,
            failure_reason = CASE WHEN v.fields THEN v.failure_reason ELSE p.failure_reason END,
            authorization_expires_at = CASE WHEN v.fields THEN v.authorization_expires_at
                                            ELSE p.authorization_expires_at END,
            updated_at = CASE WHEN v.fields THEN now() ELSE p.updated_at END,
            next_check_at = CASE WHEN v.do_check THEN v.next_check_at ELSE p.next_check_at END,
            checks = CASE WHEN v.do_reset THEN 0 ELSE p.checks END
        FROM unnest(
            CAST(:p_id AS text[]), CAST(:p_fields AS boolean[]), CAST(:p_status AS text[]),
            CAST(:p_provider_payment_id AS text[]), CAST(:p_provider_checkout_id AS text[]),
            CAST(:p_payment_link AS text[]), CAST(:p_authorized AS bigint[]),
            CAST(:p_captured AS bigint[]), CAST(:p_refunded AS bigint[]),
            CAST(:p_failure_reason AS text[]), CAST(:p_expires AS timestamptz[]),
            CAST(:p_check AS boolean[]), CAST(:p_next_check_at AS timestamptz[]),
            CAST(:p_reset AS boolean[])
        ) AS v(payment_id, fields, status, provider_payment_id, provider_checkout_id,
               payment_link, amount_authorized_minor, amount_captured_minor,
               amount_refunded_minor, failure_reason, authorization_expires_at, do_check,
               next_check_at, do_reset)
        WHERE p.payment_id = v.payment_id
        RETURNING p.payment_id, p.updated_at
    ), history AS (
        INSERT INTO payment_status_history (payment_id, from_status, to_status, reason, actor)
        SELECT * FROM unnest(CAST(:h_payment_id AS text[]), CAST(:h_from AS text[]),
                             CAST(:h_to AS text[]), CAST(:h_reason AS text[]),
                             CAST(:h_actor AS text[]))
    ), mapped AS (
        INSERT INTO provider_payment_map (provider, provider_payment_id, payment_id)
        SELECT * FROM unnest(CAST(:m_provider AS text[]), CAST(:m_provider_payment_id AS text[]),
                             CAST(:m_payment_id AS text[]))
        ON CONFLICT DO NOTHING
    ), outcomes AS (
        UPDATE webhook_events AS w
        SET outcome = v.outcome, payment_id = v.payment_id, detail = v.detail
        FROM unnest(CAST(:w_provider AS text[]), CAST(:w_event_id AS text[]),
                    CAST(:w_outcome AS text[]), CAST(:w_payment_id AS text[]),
                    CAST(:w_detail AS text[])) AS v(provider, event_id, outcome, payment_id, detail)
        WHERE w.provider = v.provider AND w.event_id = v.event_id
    )
    SELECT payment_id, updated_at FROM changed
    """
)

_CLOSE_GROUP = text(
    """
    WITH closed AS (
        INSERT INTO closed_groups (group_id, reason)
        VALUES (CAST(:group_id AS text), CAST(:reason AS text))
        ON CONFLICT DO NOTHING
    )
    UPDATE payments SET compensate_reason = CAST(:reason AS text), next_check_at = now(),
                        checks = 0
    WHERE group_id = CAST(:group_id AS text) AND compensate_reason = ''
    """
)
_COMPENSATE = (
    update(payments)
    .where(
        payments.c.payment_id == any_(bindparam("payment_ids", type_=ARRAY(Text))),
        payments.c.compensate_reason == "",
    )
    .values(compensate_reason=bindparam("reason"))
)
_GROUP_CLOSED = select(closed_groups.c.reason).where(
    closed_groups.c.group_id == bindparam("group_id")
)
_COMPENSATE_REASON = select(payments.c.compensate_reason).where(
    payments.c.payment_id == bindparam("payment_id")
)
_CLAIM_DUE = (
    select(payments.c.payment_id, payments.c.checks)
    .where(
        payments.c.next_check_at.is_not(None),
        payments.c.next_check_at <= func.now(),
        payments.c.status == any_(bindparam("statuses", type_=ARRAY(Text))),
    )
    .order_by(payments.c.next_check_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_BUMP_CHECK = (
    update(payments)
    .where(payments.c.payment_id == bindparam("pid"))
    .values(next_check_at=bindparam("at"), checks=payments.c.checks + 1)
)
_EXPIRING = (
    select(payments.c.payment_id)
    .where(
        # a literal, not a parameter: a generic plan can then use ix_payments_hold_lapse,
        # whose predicate names this status
        payments.c.status == literal_column(f"'{PaymentStatus.AUTHORIZED.value}'"),
        payments.c.authorization_expires_at.is_not(None),
        payments.c.authorization_expires_at <= bindparam("before"),
        payments.c.expiry_warned_at.is_(None),
    )
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_MARK_WARNED = (
    update(payments)
    .where(payments.c.payment_id == bindparam("pid"))
    .values(expiry_warned_at=func.now())
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
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True)
class ReceivedWebhook:
    """A webhook stored for the first time: which of our payments its provider ids name
    (``known``: provider id → payment id) and, when they name exactly one, that payment,
    locked (``locked``)."""

    known: dict[str, str]
    locked: Payment | None = None


class PaymentRepository(Protocol):
    """Payments and what hangs off them, within one unit of work."""

    async def get(
        self, payment_id: str, *, lock: bool = False, alone: bool = False
    ) -> Payment | None:
        """The payment (row-locked FOR UPDATE when ``lock``; ``alone``: a read on its own, no
        transaction around it, the unit of work's only statement)."""

    async def get_attempt(self, group_id: str, member_id: str, attempt: int) -> Payment | None:
        """The payment for one member attempt."""

    async def list_group(
        self, group_id: str, *, after: str = "", limit: int | None = None
    ) -> list[Payment]:
        """A group's payments, oldest first: the `limit` first after the payment `after`."""

    async def add(
        self, payment: Payment, *, return_url: str, payer_user_id: str, check_at: datetime
    ) -> bool:
        """Insert a new payment, due for its first check at ``check_at``; False when its
        (group, member, attempt) exists already or its group is closed. A statement on its own:
        it commits by itself, so it is the unit of work's only one."""

    async def save(self, payment: Payment) -> None:
        """Write the payment's fields and its new history rows."""

    async def attach_checkout(
        self, payment: Payment, provider_ids: Sequence[str]
    ) -> Payment | None:
        """Write the hosted page ``payment`` was given (its provider ids, link, checkout,
        hold expiry, history rows) and map ``provider_ids`` to it, unless the stored payment
        has a link already (None then, nothing written); the payment as stored."""

    async def schedule_check(self, payment_id: str, at: datetime | None, *, reset: bool) -> None:
        """When reconciliation should look at the payment next (None: never)."""

    async def map_provider_id(
        self, provider: str, provider_payment_id: str, payment_id: str
    ) -> None:
        """Remember that ``provider_payment_id`` names our payment."""

    async def receive_webhook(
        self,
        provider: str,
        event_id: str,
        event_type: str,
        provider_payment_id: str,
        body: str,
        provider_ids: Sequence[str],
    ) -> ReceivedWebhook | None:
        """Store a verified event once (None when (provider, event id) was seen before) and
        say which payments ``provider_ids`` name, the one payment they name locked."""

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

    async def flush(self) -> None:
        """Write what is queued (the unit of work calls this before it commits)."""


@dataclass
class _PaymentWrite:
    """The queued update of one payments row: its fields (``values``, from save) and/or its
    next check (from schedule_check)."""

    values: dict[str, Any] | None = None
    #: the payment saved (its updated_at is set from the row once written)
    payment: Payment | None = None
    check: bool = False
    next_check_at: datetime | None = None
    reset: bool = False


@dataclass
class _Queue:
    payments: dict[str, _PaymentWrite] = field(default_factory=dict)
    history: list[tuple[str, str | None, str, str, str]] = field(default_factory=list)
    mapped: dict[tuple[str, str], str] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], tuple[str, str | None, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.payments or self.history or self.mapped or self.outcomes)

    def params(self) -> dict[str, list[Any]]:
        rows = list(self.payments.items())
        empty: dict[str, Any] = {}
        fields = [(w.values or empty) for _, w in rows]
        return {
            "p_id": [payment_id for payment_id, _ in rows],
            "p_fields": [w.values is not None for _, w in rows],
            "p_status": [f.get("status") for f in fields],
            "p_provider_payment_id": [f.get("provider_payment_id") for f in fields],
            "p_provider_checkout_id": [f.get("provider_checkout_id") for f in fields],
            "p_payment_link": [f.get("payment_link") for f in fields],
            "p_authorized": [f.get("amount_authorized_minor") for f in fields],
            "p_captured": [f.get("amount_captured_minor") for f in fields],
            "p_refunded": [f.get("amount_refunded_minor") for f in fields],
            "p_failure_reason": [f.get("failure_reason") for f in fields],
            "p_expires": [f.get("authorization_expires_at") for f in fields],
            "p_check": [w.check for _, w in rows],
            "p_next_check_at": [w.next_check_at for _, w in rows],
            "p_reset": [w.check and w.reset for _, w in rows],
            "h_payment_id": [h[0] for h in self.history],
            "h_from": [h[1] for h in self.history],
            "h_to": [h[2] for h in self.history],
            "h_reason": [h[3] for h in self.history],
            "h_actor": [h[4] for h in self.history],
            "m_provider": [provider for provider, _ in self.mapped],
            "m_provider_payment_id": [ppid for _, ppid in self.mapped],
            "m_payment_id": list(self.mapped.values()),
            "w_provider": [provider for provider, _ in self.outcomes],
            "w_event_id": [event_id for _, event_id in self.outcomes],
            "w_outcome": [o[0] for o in self.outcomes.values()],
            "w_payment_id": [o[1] for o in self.outcomes.values()],
            "w_detail": [o[2] for o in self.outcomes.values()],
        }


class SqlPaymentRepository:
    """:class:`PaymentRepository` over the unit of work's session."""

    def __init__(self, session: AsyncSession, track: Callable[[Payment], None]) -> None:
        self.session = session
        self._track_in_uow = track
        self._conn: AsyncConnection | None = None
        self._alone = False
        self._queue = _Queue()
        #: compensate_reason of the payments loaded in this transaction, as of their last load
        #: (it cannot change while the row is locked, so _after_change need not read it again)
        self._loaded_reason: dict[str, str] = {}

    def _track(self, payment: Payment) -> Payment:
        self._track_in_uow(payment)
        return payment

    async def _run(self, statement: Any, params: dict[str, Any]) -> Any:
        """Run one statement on the transaction's connection, after what is queued."""
        if self._queue:
            await self.flush()
        return await self._execute(statement, params)

    async def _execute(self, statement: Any, params: dict[str, Any]) -> Any:
        if self._alone:
            raise RuntimeError("this unit of work ran a statement on its own; open another")
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await self.session.connection()
        return await conn.execute(statement, params)

    async def _execute_alone(self, statement: Any, params: dict[str, Any]) -> Any:
        """Run one statement that commits by itself (autocommit: no BEGIN / COMMIT round
        trips); only as the unit of work's first and only statement."""
        if self._conn is not None or self._queue or self._alone:
            raise RuntimeError("a statement on its own must be the unit of work's only one")
        self._alone = True
        conn = await self.session.connection(execution_options=_AUTOCOMMIT)
        return await conn.execute(statement, params)

    async def flush(self) -> None:
        """Write what is queued, in one statement."""
        if not self._queue:
            return
        queue, self._queue = self._queue, _Queue()
        result = await self._execute(_FLUSH, queue.params())
        for row in result:
            write = queue.payments.get(row.payment_id)
            if write is not None and write.payment is not None:
                write.payment.updated_at = row.updated_at

    def _loaded(self, row: Any) -> Payment:
        self._loaded_reason[row.payment_id] = row.compensate_reason
        return self._track(_to_payment(row))

    async def get(
        self, payment_id: str, *, lock: bool = False, alone: bool = False
    ) -> Payment | None:
        """The payment (row-locked FOR UPDATE when ``lock``; ``alone``: a read on its own, no
        transaction around it, the unit of work's only statement)."""
        params = {"payment_id": payment_id}
        if alone and not lock:
            result = await self._execute_alone(_GET, params)
        else:
            result = await self._run(_GET_LOCKED if lock else _GET, params)
        row = result.first()
        return self._loaded(row) if row is not None else None

    async def get_attempt(self, group_id: str, member_id: str, attempt: int) -> Payment | None:
        """The payment for one member attempt."""
        result = await self._run(
            _GET_ATTEMPT, {"group_id": group_id, "member_id": member_id, "attempt": attempt}
        )
        row = result.first()
        return self._loaded(row) if row is not None else None

    async def list_group(
        self, group_id: str, *, after: str = "", limit: int | None = None
    ) -> list[Payment]:
        """A group's payments, oldest first: the `limit` first after the payment `after`
        (keyset: its (created_at, payment_id), read in the same statement)."""
        statement = _LIST_GROUP
        if after:
            key = select(payments.c.created_at).where(payments.c.payment_id == bindparam("after"))
            statement = statement.where(
                tuple_(payments.c.created_at, payments.c.payment_id)
                > tuple_(key.scalar_subquery(), bindparam("after"))
            )
        if limit is not None:
            statement = statement.limit(bindparam("limit"))
        rows = await self._run(statement, {"group_id": group_id, "after": after, "limit": limit})
        return [self._loaded(r) for r in rows]

    async def add(
        self, payment: Payment, *, return_url: str, payer_user_id: str, check_at: datetime
    ) -> bool:
        """Insert a new payment, due for its first check at ``check_at``; False when its
        (group, member, attempt) exists already or its group is closed. A statement on its own:
        it commits by itself, so it is the unit of work's only one."""
        self._track(payment)
        inserted = await self._execute_alone(
            _ADD,
            {
                "payment_id": payment.payment_id,
                "group_id": payment.group_id,
                "member_id": payment.member_id,
                "attempt": payment.attempt,
                "amount_minor": payment.amount_minor,
                "currency_code": payment.currency_code,
                "provider": payment.provider,
                "status": payment.status.value,
                "description": payment.description,
                "return_url": return_url,
                "payer_user_id": payer_user_id,
                "next_check_at": check_at,
            },
        )
        row = inserted.first()
        if row is None:
            return False
        payment.created_at, payment.updated_at = row.created_at, row.updated_at
        return True

    def _payment_write(self, payment_id: str) -> _PaymentWrite:
        write = self._queue.payments.get(payment_id)
        if write is None:
            write = self._queue.payments[payment_id] = _PaymentWrite()
        return write

    async def save(self, payment: Payment) -> None:
        """Write the payment's fields and its new history rows (queued: see flush)."""
        values = {name: getattr(payment, name) for name in _FIELDS}
        values["status"] = payment.status.value
        write = self._payment_write(payment.payment_id)
        write.values = values
        write.payment = payment
        self._queue.history.extend(
            (
                payment.payment_id,
                change.from_status.value if change.from_status else None,
                change.to_status.value,
                change.reason[:500],
                change.actor,
            )
            for change in payment.changes
        )
        payment.changes.clear()

    async def attach_checkout(
        self, payment: Payment, provider_ids: Sequence[str]
    ) -> Payment | None:
        """Write the hosted page ``payment`` was given (its provider ids, link, checkout,
        hold expiry, history rows) and map ``provider_ids`` to it, unless the stored payment
        has a link already (None then, nothing written); the payment as stored."""
        self._track(payment)
        changes = payment.changes
        result = await self._run(
            _ATTACH_CHECKOUT,
            {
                "payment_id": payment.payment_id,
                "provider_payment_id": payment.provider_payment_id,
                "provider_checkout_id": payment.provider_checkout_id,
                "payment_link": payment.payment_link,
                "authorization_expires_at": payment.authorization_expires_at,
                "h_from": [c.from_status.value if c.from_status else None for c in changes],
                "h_to": [c.to_status.value for c in changes],
                "h_reason": [c.reason[:500] for c in changes],
                "h_actor": [c.actor for c in changes],
                "provider_ids": [i for i in provider_ids if i],
            },
        )
        row = result.first()
        if row is None:
            return None
        payment.changes.clear()
        self._loaded_reason[row.payment_id] = row.compensate_reason
        return _to_payment(row)

    async def schedule_check(self, payment_id: str, at: datetime | None, *, reset: bool) -> None:
        """When reconciliation should look at the payment next (None: never; queued)."""
        write = self._payment_write(payment_id)
        write.check, write.next_check_at = True, at
        write.reset = reset or write.reset

    async def map_provider_id(
        self, provider: str, provider_payment_id: str, payment_id: str
    ) -> None:
        """Remember that ``provider_payment_id`` names our payment (queued)."""
        if provider_payment_id:
            self._queue.mapped.setdefault((provider, provider_payment_id), payment_id)

    async def receive_webhook(
        self,
        provider: str,
        event_id: str,
        event_type: str,
        provider_payment_id: str,
        body: str,
        provider_ids: Sequence[str],
    ) -> ReceivedWebhook | None:
        """Store a verified event once (None when (provider, event id) was seen before) and
        say which payments ``provider_ids`` name, the one payment they name locked.

        A concurrent delivery of the same event waits on the primary key until the first
        transaction ends, then sees the conflict."""
        result = await self._run(
            _RECEIVE_WEBHOOK,
            {
                "provider": provider,
                "event_id": event_id,
                "event_type": event_type,
                "provider_payment_id": provider_payment_id,
                "body": body,
                "ids": list(provider_ids),
            },
        )
        row = result.one()
        if not row.fresh:
            return None
        known = dict(zip(row.known_ids, row.known_payments, strict=True))
        locked = self._loaded(row) if row.payment_id is not None else None
        return ReceivedWebhook(known, locked)

    async def record_webhook(
        self, provider: str, event_id: str, event_type: str, provider_payment_id: str, body: str
    ) -> bool:
        """Store a verified event once; False when (provider, event id) was seen before.

        A concurrent delivery of the same event waits here on the primary key until the first
        transaction ends, then sees the conflict.
        """
        inserted = await self._run(
            _RECORD_WEBHOOK,
            {
                "provider": provider,
                "event_id": event_id,
                "event_type": event_type,
                "provider_payment_id": provider_payment_id,
                "body": body,
            },
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
        malformed…) and, for the operator, why (queued)."""
        self._queue.outcomes[(provider, event_id)] = (outcome, payment_id, detail[:1000])

    async def close_group(self, group_id: str, reason: str) -> None:
        """Remember the group is over and mark its payments for void/refund now."""
        self._loaded_reason.clear()
        await self._run(_CLOSE_GROUP, {"group_id": group_id, "reason": reason})

    async def compensate(self, payment_ids: Sequence[str], reason: str) -> None:
        """Mark these payments (of any group) for void/refund, unless already marked."""
        if not payment_ids:
            return
        self._loaded_reason.clear()
        await self._run(_COMPENSATE, {"payment_ids": list(payment_ids), "reason": reason})

    async def group_closed(self, group_id: str) -> str | None:
        """Why the group was closed, or None while it is open."""
        result = await self._run(_GROUP_CLOSED, {"group_id": group_id})
        reason: str | None = result.scalar_one_or_none()
        return reason

    async def compensate_reason(self, payment_id: str) -> str:
        """Why the payment's money must go back ("" when it need not): as the payment's last
        load in this transaction read it (under its row lock, if locked), else read now."""
        known = self._loaded_reason.get(payment_id)
        if known is not None:
            return known
        result = await self._run(_COMPENSATE_REASON, {"payment_id": payment_id})
        reason: str | None = result.scalar_one_or_none()
        return reason or ""

    async def claim_due(self, limit: int, statuses: Sequence[str]) -> list[tuple[str, int]]:
        """Due payments (payment id, checks so far), locked SKIP LOCKED so replicas split."""
        rows = await self._run(_CLAIM_DUE, {"limit": limit, "statuses": list(statuses)})
        return [(r.payment_id, r.checks) for r in rows]

    async def bump_check(self, payment_id: str, at: datetime) -> None:
        """Push the next check to ``at`` and count this one."""
        await self._run(_BUMP_CHECK, {"pid": payment_id, "at": at})

    async def expiring(self, before: datetime, limit: int) -> list[str]:
        """Authorized payments whose hold lapses before ``before`` and were not warned."""
        rows = await self._run(_EXPIRING, {"before": before, "limit": limit})
        return [r.payment_id for r in rows]

    async def mark_warned(self, payment_id: str) -> None:
        """Record that the expiry warning went out."""
        await self._run(_MARK_WARNED, {"pid": payment_id})
