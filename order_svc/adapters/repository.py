"""Loading and saving orders (with lines, shares and saga steps) in the order database.

`save()` is an optimistic write: it succeeds only if nobody saved the order since it was
loaded (version check), writes the new `order_events` rows in the same transaction and
extends the caller's lease on the order (or gives it back once the order is finished). Every
order the repository stores or hands out is given to `track` (the unit of work's), which
publishes the events the order recorded.

Every operation is one statement, built once at import (fixed SQL text, so SQLAlchemy's
compiled cache and asyncpg's per-connection prepared statements are hit every time; rows of
several lines, shares or steps travel as parallel arrays through ``unnest``): an order is
read with its lines, shares and steps in one round trip, created with them in one, and saved
(order row, the shares whose status changed, the new steps) in one.

`read()`, `claim_due()` and `save(..., alone=True)` run that one statement outside a
transaction (it commits by itself: no BEGIN / COMMIT round trips); they are for a unit of work
that does nothing else, and the repository refuses any statement after them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mppo.platform.errors import ConflictError
from order_svc.domain.model import (
    FailureReason,
    Line,
    Order,
    OrderStatus,
    Share,
    ShareStatus,
    Step,
)

_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}

#: order rows (of `{source}`, as ``o``) with their lines, shares and steps (in order) as
#: arrays, in one round trip
_SELECT_ORDERS = """
    SELECT o.order_id, o.group_id, o.merchant_id, o.status, o.failure_reason,
           o.failure_detail, o.currency, o.total_minor, o.fees_minor, o.tax_minor, o.tip_minor,
           o.reservation_id, o.merchant_order_id, o.merchant_cancelled, o.version,
           o.created_at, o.updated_at,
           i.line_ids, i.skus, i.names, i.quantities, i.unit_prices,
           s.member_ids, s.payment_ids, s.amounts, s.statuses,
           e.steps, e.outcomes, e.details, e.created_ats
    FROM {source} o
    CROSS JOIN LATERAL (
        SELECT array_agg(line_id ORDER BY line_no) AS line_ids,
               array_agg(sku ORDER BY line_no) AS skus,
               array_agg(name ORDER BY line_no) AS names,
               array_agg(quantity ORDER BY line_no) AS quantities,
               array_agg(unit_price_minor ORDER BY line_no) AS unit_prices
        FROM order_items WHERE order_items.order_id = o.order_id
    ) i
    CROSS JOIN LATERAL (
        SELECT array_agg(member_id ORDER BY line_no) AS member_ids,
               array_agg(payment_id ORDER BY line_no) AS payment_ids,
               array_agg(amount_minor ORDER BY line_no) AS amounts,
               array_agg(status ORDER BY line_no) AS statuses
        FROM order_shares WHERE order_shares.order_id = o.order_id
    ) s
    CROSS JOIN LATERAL (
        SELECT array_agg(step ORDER BY event_no) AS steps,
               array_agg(outcome ORDER BY event_no) AS outcomes,
               array_agg(detail ORDER BY event_no) AS details,
               array_agg(created_at ORDER BY event_no) AS created_ats
        FROM order_events WHERE order_events.order_id = o.order_id
    ) e
"""
_SELECT_ORDER = _SELECT_ORDERS.format(source="orders") + " WHERE o.order_id = :order_id"
_GET = text(_SELECT_ORDER)
_GET_FOR_UPDATE = text(_SELECT_ORDER + " FOR UPDATE OF o")

#: the order, its lines and shares (and any steps it recorded) in one statement; no row when
#: the group has an order already
_ADD_IF_ABSENT = text(
    """
    WITH added AS (
        INSERT INTO orders (order_id, group_id, merchant_id, status, currency, total_minor,
                            fees_minor, tax_minor, tip_minor)
        VALUES (:order_id, :group_id, :merchant_id, :status, :currency, :total_minor,
                :fees_minor, :tax_minor, :tip_minor)
        ON CONFLICT (group_id) DO NOTHING
        RETURNING order_id, created_at, updated_at
    ), items AS (
        INSERT INTO order_items (order_id, line_no, line_id, sku, name, quantity,
                                 unit_price_minor)
        SELECT added.order_id, l.no - 1, l.line_id, l.sku, l.name, l.quantity, l.unit_price
        FROM added, unnest(
            CAST(:line_ids AS text[]), CAST(:skus AS text[]), CAST(:names AS text[]),
            CAST(:quantities AS integer[]), CAST(:unit_prices AS bigint[])
        ) WITH ORDINALITY AS l(line_id, sku, name, quantity, unit_price, no)
        RETURNING 1
    ), shares AS (
        INSERT INTO order_shares (order_id, payment_id, line_no, member_id, amount_minor, status)
        SELECT added.order_id, s.payment_id, s.no - 1, s.member_id, s.amount, s.status
        FROM added, unnest(
            CAST(:payment_ids AS text[]), CAST(:member_ids AS text[]),
            CAST(:amounts AS bigint[]), CAST(:statuses AS text[])
        ) WITH ORDINALITY AS s(payment_id, member_id, amount, status, no)
        RETURNING 1
    ), steps AS (
        INSERT INTO order_events (order_id, step, outcome, detail)
        SELECT added.order_id, n.step, n.outcome, n.detail
        FROM added, unnest(
            CAST(:steps AS text[]), CAST(:outcomes AS text[]), CAST(:details AS text[])
        ) WITH ORDINALITY AS n(step, outcome, detail, no)
        ORDER BY n.no
        RETURNING 1
    )
    SELECT order_id, created_at, updated_at FROM added
    """
)

_ID_FOR_GROUP = text("SELECT order_id FROM orders WHERE group_id = :group_id")

#: the order row if its version is unchanged, the shares whose status changed and the new
#: steps, in one statement; no row on a version conflict (then nothing is written). The lease
#: is extended, or given back (NULL) once the order is finished.
_SAVE = text(
    """
    WITH saved AS (
        UPDATE orders
        SET status = :status, failure_reason = :failure_reason,
            failure_detail = :failure_detail, reservation_id = :reservation_id,
            merchant_order_id = :merchant_order_id, merchant_cancelled = :merchant_cancelled,
            version = version + 1, attempts = 0, updated_at = now(),
            lease_until = CASE WHEN CAST(:release AS boolean) THEN NULL
                               ELSE now() + make_interval(secs => :lease_seconds) END
        WHERE order_id = :order_id AND version = :version
        RETURNING order_id, updated_at
    ), shares AS (
        UPDATE order_shares
        SET status = u.status
        FROM saved, unnest(CAST(:payment_ids AS text[]), CAST(:statuses AS text[]))
            AS u(payment_id, status)
        WHERE order_shares.order_id = saved.order_id
          AND order_shares.payment_id = u.payment_id
          AND order_shares.status <> u.status
        RETURNING 1
    ), steps AS (
        INSERT INTO order_events (order_id, step, outcome, detail)
        SELECT saved.order_id, n.step, n.outcome, n.detail
        FROM saved, unnest(
            CAST(:steps AS text[]), CAST(:outcomes AS text[]), CAST(:details AS text[])
        ) WITH ORDINALITY AS n(step, outcome, detail, no)
        ORDER BY n.no
        RETURNING 1
    )
    SELECT updated_at FROM saved
    """
)

#: lease due unfinished orders nobody else holds (the literal statuses match ix_orders_due)
#: and read them, with their lines, shares and steps, in the same statement
_CLAIM_DUE = text(
    """
    WITH claimed AS (
        UPDATE orders SET lease_until = now() + make_interval(secs => :lease_seconds)
        WHERE order_id IN (
            SELECT order_id FROM orders
            WHERE status NOT IN ('CONFIRMED', 'FAILED')
              AND next_attempt_at <= now()
              AND (lease_until IS NULL OR lease_until < now())
            ORDER BY next_attempt_at
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
    )
    """
    + _SELECT_ORDERS.format(source="claimed")
    + " ORDER BY o.next_attempt_at"
)

_SCHEDULE_RETRY = text(
    "UPDATE orders SET attempts = attempts + 1,"
    " next_attempt_at = now() + make_interval(secs => :delay_seconds), lease_until = NULL"
    " WHERE order_id = :order_id RETURNING attempts"
)
_ADD_STEP = text(
    "INSERT INTO order_events (order_id, step, outcome, detail)"
    " VALUES (:order_id, :step, :outcome, :detail)"
)
_ATTEMPTS = text("SELECT attempts FROM orders WHERE order_id = :order_id")


def _untracked(order: Order) -> None:
    return None


def _steps(steps: list[Step]) -> dict[str, list[str]]:
    return {
        "steps": [s.step for s in steps],
        "outcomes": [s.outcome for s in steps],
        "details": [s.detail for s in steps],
    }


def _order(row: RowMapping) -> Order:
    shares = zip(
        row["member_ids"] or (),
        row["payment_ids"] or (),
        row["amounts"] or (),
        row["statuses"] or (),
        strict=True,
    )
    lines = zip(
        row["line_ids"] or (),
        row["skus"] or (),
        row["names"] or (),
        row["quantities"] or (),
        row["unit_prices"] or (),
        strict=True,
    )
    steps = zip(
        row["steps"] or (),
        row["outcomes"] or (),
        row["details"] or (),
        row["created_ats"] or (),
        strict=True,
    )
    return Order(
        order_id=row["order_id"],
        group_id=row["group_id"],
        merchant_id=row["merchant_id"],
        currency=row["currency"],
        total_minor=row["total_minor"],
        fees_minor=row["fees_minor"],
        tax_minor=row["tax_minor"],
        tip_minor=row["tip_minor"],
        lines=[Line(*line) for line in lines],
        shares=[Share(m, p, a, ShareStatus(s)) for m, p, a, s in shares],
        status=OrderStatus(row["status"]),
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
        failure_detail=row["failure_detail"],
        reservation_id=row["reservation_id"],
        merchant_order_id=row["merchant_order_id"],
        merchant_cancelled=row["merchant_cancelled"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        steps=[Step(*step) for step in steps],
    )


class OrderRepository:
    """Orders in one session (one transaction); implements service_layer.ports.Orders."""

    def __init__(self, session: AsyncSession, track: Callable[[Order], None] = _untracked) -> None:
        self._session = session
        self._track = track
        self._used = False
        self._alone = False

    async def _conn(self) -> AsyncConnection:
        """The unit of work's connection (in its transaction)."""
        if self._alone:
            raise RuntimeError("this unit of work ran a statement on its own; open another")
        self._used = True
        return await self._session.connection()

    async def _conn_alone(self) -> AsyncConnection:
        """A connection for one statement that commits by itself (no BEGIN / COMMIT): only
        as the unit of work's first and only statement."""
        if self._used or self._alone:
            raise RuntimeError("a statement on its own must be the unit of work's only one")
        self._alone = True
        return await self._session.connection(execution_options=_AUTOCOMMIT)

    async def add_if_absent(self, order: Order) -> str:
        """Insert `order` unless its group has one already; the group's order id either way."""
        conn = await self._conn()
        inserted = (
            await conn.execute(
                _ADD_IF_ABSENT,
                {
                    "order_id": order.order_id,
                    "group_id": order.group_id,
                    "merchant_id": order.merchant_id,
                    "status": order.status.value,
                    "currency": order.currency,
                    "total_minor": order.total_minor,
                    "fees_minor": order.fees_minor,
                    "tax_minor": order.tax_minor,
                    "tip_minor": order.tip_minor,
                    "line_ids": [line.line_id for line in order.lines],
                    "skus": [line.sku for line in order.lines],
                    "names": [line.name for line in order.lines],
                    "quantities": [line.quantity for line in order.lines],
                    "unit_prices": [line.unit_price_minor for line in order.lines],
                    "payment_ids": [share.payment_id for share in order.shares],
                    "member_ids": [share.member_id for share in order.shares],
                    "amounts": [share.amount_minor for share in order.shares],
                    "statuses": [share.status.value for share in order.shares],
                    **_steps(order.new_steps),
                },
            )
        ).first()
        if inserted is None:
            # our statement's snapshot may predate a concurrent winner: look again
            existing = await conn.scalar(_ID_FOR_GROUP, {"group_id": order.group_id})
            return str(existing)
        order.created_at, order.updated_at = inserted[1], inserted[2]
        order.new_steps = []
        self._track(order)
        return order.order_id

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order with everything it holds, or None (in the unit of work's transaction)."""
        conn = await self._conn()
        query = _GET_FOR_UPDATE if for_update else _GET
        row = (await conn.execute(query, {"order_id": order_id})).mappings().first()
        return self._loaded(row)

    async def read(self, order_id: str) -> Order | None:
        """The order as last committed, or None: one statement outside any transaction, for a
        unit of work that only reads it (nothing else may run in it)."""
        conn = await self._conn_alone()
        row = (await conn.execute(_GET, {"order_id": order_id})).mappings().first()
        return self._loaded(row)

    def _loaded(self, row: RowMapping | None) -> Order | None:
        if row is None:
            return None
        order = _order(row)
        self._track(order)
        return order

    async def id_for_group(self, group_id: str) -> str | None:
        """The id of the group's order, if there is one."""
        conn = await self._conn()
        found = await conn.scalar(_ID_FOR_GROUP, {"group_id": group_id})
        return None if found is None else str(found)

    async def save(self, order: Order, *, lease_seconds: float, alone: bool = False) -> None:
        """Write the order's changes if its version is unchanged; ConflictError otherwise.

        The lease is extended by `lease_seconds`, or given back once the order is finished.
        `alone`: nothing else is written in this unit of work; when the order recorded no
        events either, the one statement then commits by itself (no BEGIN / COMMIT)."""
        conn = await (self._conn_alone() if alone and not order.events else self._conn())
        updated = (
            await conn.execute(
                _SAVE,
                {
                    "order_id": order.order_id,
                    "version": order.version,
                    "status": order.status.value,
                    "failure_reason": order.failure_reason.value if order.failure_reason else None,
                    "failure_detail": order.failure_detail,
                    "reservation_id": order.reservation_id,
                    "merchant_order_id": order.merchant_order_id,
                    "merchant_cancelled": order.merchant_cancelled,
                    "release": order.status.terminal,
                    "lease_seconds": float(lease_seconds),
                    "payment_ids": [share.payment_id for share in order.shares],
                    "statuses": [share.status.value for share in order.shares],
                    **_steps(order.new_steps),
                },
            )
        ).first()
        if updated is None:
            raise ConflictError(f"order {order.order_id} was changed concurrently")
        at = updated[0]
        if order.new_steps:
            # the steps are stored with the time of this write (now() of its transaction)
            saved = {id(step): replace(step, at=at) for step in order.new_steps}
            order.steps = [saved.get(id(step), step) for step in order.steps]
            order.new_steps = []
        order.version += 1
        order.updated_at = at
        self._track(order)

    async def claim_due(self, limit: int, lease_seconds: float) -> list[Order]:
        """Lease up to `limit` unfinished orders that are due and not leased by someone else,
        and read them (one statement that commits by itself: the unit of work's only one)."""
        conn = await self._conn_alone()
        claimed = await conn.execute(
            _CLAIM_DUE, {"limit": limit, "lease_seconds": float(lease_seconds)}
        )
        return [_order(row) for row in claimed.mappings()]

    async def schedule_retry(self, order_id: str, delay_seconds: float) -> int:
        """Release the lease and try again after `delay_seconds`; the new attempt count."""
        conn = await self._conn()
        result = await conn.execute(
            _SCHEDULE_RETRY, {"order_id": order_id, "delay_seconds": float(delay_seconds)}
        )
        return int(result.scalar_one())

    async def add_step(self, order_id: str, step: str, outcome: str, detail: str) -> None:
        """Record a step outcome that does not change the order (e.g. a retry)."""
        conn = await self._conn()
        await conn.execute(
            _ADD_STEP,
            {"order_id": order_id, "step": step, "outcome": outcome, "detail": detail[:1000]},
        )

    async def attempts(self, order_id: str) -> int:
        """Failed attempts since the last step that succeeded."""
        conn = await self._conn()
        return int(await conn.scalar(_ATTEMPTS, {"order_id": order_id}) or 0)
