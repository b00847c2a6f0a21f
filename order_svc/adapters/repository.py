"""Loading and saving orders (with lines, shares and saga steps) in the order database.

`save()` is an optimistic write: it succeeds only if nobody saved the order since it was
loaded (version check), writes the new `order_events` rows in the same transaction and
extends the caller's lease on the order. Every order the repository stores or hands out is
given to `track` (the unit of work's), which publishes the events the order recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mppo.platform.errors import ConflictError
from order_svc.adapters.tables import (
    TERMINAL_STATUSES,
    order_events,
    order_items,
    order_shares,
    orders,
)
from order_svc.domain.model import (
    FailureReason,
    Line,
    Order,
    OrderStatus,
    Share,
    ShareStatus,
    Step,
)


def _untracked(order: Order) -> None:
    return None


class OrderRepository:
    """Orders in one session (one transaction); implements service_layer.ports.Orders."""

    def __init__(self, session: AsyncSession, track: Callable[[Order], None] = _untracked) -> None:
        self._session = session
        self._track = track

    async def add_if_absent(self, order: Order) -> str:
        """Insert `order` unless its group has one already; the group's order id either way."""
        inserted = await self._session.execute(
            pg_insert(orders)
            .values(
                order_id=order.order_id,
                group_id=order.group_id,
                merchant_id=order.merchant_id,
                status=order.status.value,
                currency=order.currency,
                total_minor=order.total_minor,
                fees_minor=order.fees_minor,
                tax_minor=order.tax_minor,
                tip_minor=order.tip_minor,
            )
            .on_conflict_do_nothing(index_elements=[orders.c.group_id])
            .returning(orders.c.order_id)
        )
        if inserted.first() is None:
            existing = await self._session.scalar(
                select(orders.c.order_id).where(orders.c.group_id == order.group_id)
            )
            return str(existing)
        if order.lines:
            await self._session.execute(
                insert(order_items),
                [
                    {
                        "order_id": order.order_id,
                        "line_no": no,
                        "line_id": line.line_id,
                        "sku": line.sku,
                        "name": line.name,
                        "quantity": line.quantity,
                        "unit_price_minor": line.unit_price_minor,
                    }
                    for no, line in enumerate(order.lines)
                ],
            )
        if order.shares:
            await self._session.execute(
                insert(order_shares),
                [
                    {
                        "order_id": order.order_id,
                        "payment_id": share.payment_id,
                        "line_no": no,
                        "member_id": share.member_id,
                        "amount_minor": share.amount_minor,
                        "status": share.status.value,
                    }
                    for no, share in enumerate(order.shares)
                ],
            )
        await self._write_steps(order)
        self._track(order)
        return order.order_id

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order with everything it holds, or None."""
        query = select(orders).where(orders.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).mappings().first()
        if row is None:
            return None
        lines = (
            await self._session.execute(
                select(order_items)
                .where(order_items.c.order_id == order_id)
                .order_by(order_items.c.line_no)
            )
        ).mappings()
        shares = (
            await self._session.execute(
                select(order_shares)
                .where(order_shares.c.order_id == order_id)
                .order_by(order_shares.c.line_no)
            )
        ).mappings()
        steps = (
            await self._session.execute(
                select(order_events)
                .where(order_events.c.order_id == order_id)
                .order_by(order_events.c.event_no)
            )
        ).mappings()
        order = Order(
            order_id=row["order_id"],
            group_id=row["group_id"],
            merchant_id=row["merchant_id"],
            currency=row["currency"],
            total_minor=row["total_minor"],
            fees_minor=row["fees_minor"],
            tax_minor=row["tax_minor"],
            tip_minor=row["tip_minor"],
            lines=[
                Line(r["line_id"], r["sku"], r["name"], r["quantity"], r["unit_price_minor"])
                for r in lines
            ],
            shares=[
                Share(r["member_id"], r["payment_id"], r["amount_minor"], ShareStatus(r["status"]))
                for r in shares
            ],
            status=OrderStatus(row["status"]),
            failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
            failure_detail=row["failure_detail"],
            reservation_id=row["reservation_id"],
            merchant_order_id=row["merchant_order_id"],
            merchant_cancelled=row["merchant_cancelled"],
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            steps=[Step(r["step"], r["outcome"], r["detail"], r["created_at"]) for r in steps],
        )
        self._track(order)
        return order

    async def id_for_group(self, group_id: str) -> str | None:
        """The id of the group's order, if there is one."""
        found = await self._session.scalar(
            select(orders.c.order_id).where(orders.c.group_id == group_id)
        )
        return None if found is None else str(found)

    async def save(self, order: Order, *, lease_seconds: float) -> None:
        """Write the order's changes if its version is unchanged; ConflictError otherwise."""
        result = await self._session.execute(
            update(orders)
            .where(orders.c.order_id == order.order_id, orders.c.version == order.version)
            .values(
                status=order.status.value,
                failure_reason=order.failure_reason.value if order.failure_reason else None,
                failure_detail=order.failure_detail,
                reservation_id=order.reservation_id,
                merchant_order_id=order.merchant_order_id,
                merchant_cancelled=order.merchant_cancelled,
                version=orders.c.version + 1,
                attempts=0,
                lease_until=func.now() + timedelta(seconds=lease_seconds),
                updated_at=func.now(),
            )
            .returning(orders.c.updated_at)
        )
        updated = result.first()
        if updated is None:
            raise ConflictError(f"order {order.order_id} was changed concurrently")
        for share in order.shares:
            await self._session.execute(
                update(order_shares)
                .where(
                    order_shares.c.order_id == order.order_id,
                    order_shares.c.payment_id == share.payment_id,
                )
                .values(status=share.status.value)
            )
        await self._write_steps(order)
        order.version += 1
        order.updated_at = updated[0]
        self._track(order)

    async def _write_steps(self, order: Order) -> None:
        if order.new_steps:
            await self._session.execute(
                insert(order_events),
                [
                    {
                        "order_id": order.order_id,
                        "step": s.step,
                        "outcome": s.outcome,
                        "detail": s.detail,
                    }
                    for s in order.new_steps
                ],
            )
            order.new_steps = []

    async def claim_due(self, limit: int, lease_seconds: float) -> list[str]:
        """Lease up to `limit` unfinished orders that are due and not leased by someone else."""
        now = func.now()
        due = (
            select(orders.c.order_id)
            .where(
                orders.c.status.notin_(TERMINAL_STATUSES),
                orders.c.next_attempt_at <= now,
                or_(orders.c.lease_until.is_(None), orders.c.lease_until < now),
            )
            .order_by(orders.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = await self._session.execute(
            update(orders)
            .where(orders.c.order_id.in_(due.scalar_subquery()))
            .values(lease_until=now + timedelta(seconds=lease_seconds))
            .returning(orders.c.order_id)
        )
        return [str(row[0]) for row in claimed]

    async def schedule_retry(self, order_id: str, delay_seconds: float) -> int:
        """Release the lease and try again after `delay_seconds`; the new attempt count."""
        result = await self._session.execute(
            update(orders)
            .where(orders.c.order_id == order_id)
            .values(
                attempts=orders.c.attempts + 1,
                next_attempt_at=func.now() + timedelta(seconds=delay_seconds),
                lease_until=None,
            )
            .returning(orders.c.attempts)
        )
        return int(result.scalar_one())

    async def add_step(self, order_id: str, step: str, outcome: str, detail: str) -> None:
        """Record a step outcome that does not change the order (e.g. a retry)."""
        await self._session.execute(
            insert(order_events).values(
                order_id=order_id, step=step, outcome=outcome, detail=detail[:1000]
            )
        )

    async def attempts(self, order_id: str) -> int:
        """Failed attempts since the last step that succeeded."""
        return int(
            await self._session.scalar(
                select(orders.c.attempts).where(orders.c.order_id == order_id)
            )
            or 0
        )

    async def release(self, order_id: str) -> None:
        """Give the lease back (the order is finished or will be picked up again at once)."""
        await self._session.execute(
            update(orders).where(and_(orders.c.order_id == order_id)).values(lease_until=None)
        )
