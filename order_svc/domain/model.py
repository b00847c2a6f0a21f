"""The order aggregate: lines, shares, the saga's status and its forward-only transitions.

Pure Python. The saga (service_layer/saga.py) calls the methods here after each external step
succeeds or fails; each method checks the transition is legal and records the step (and, for
creation, confirmation and failure, a domain event in `events`), so the order row, its
`order_events` rows and the outbox event the unit of work translates commit together.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from mppo.platform.errors import FailedPreconditionError


class OrderStatus(enum.StrEnum):
    """State of the placement saga (stored as text; mirrors mppo.order.v1.OrderStatus)."""

    CREATED = "CREATED"
    VALIDATED = "VALIDATED"
    PLACED = "PLACED"
    CONFIRMED = "CONFIRMED"
    COMPENSATING = "COMPENSATING"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """CONFIRMED and FAILED never change again."""
        return self in (OrderStatus.CONFIRMED, OrderStatus.FAILED)


class FailureReason(enum.StrEnum):
    """Why an order failed (mirrors mppo.order.v1.OrderFailureReason without the prefix)."""

    OUT_OF_STOCK = "OUT_OF_STOCK"
    MERCHANT_REJECTED = "MERCHANT_REJECTED"
    CAPTURE_FAILED = "CAPTURE_FAILED"
    PRICE_MISMATCH = "PRICE_MISMATCH"
    UNKNOWN_ITEM = "UNKNOWN_ITEM"
    MERCHANT_UNAVAILABLE = "MERCHANT_UNAVAILABLE"
    INVALID_ORDER = "INVALID_ORDER"


class ShareStatus(enum.StrEnum):
    """Where one share stands (mirrors mppo.order.v1.OrderShareStatus)."""

    PENDING = "PENDING"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"

    @property
    def released(self) -> bool:
        """The money of this share is back with the payer."""
        return self in (ShareStatus.VOIDED, ShareStatus.REFUNDED)


_FORWARD: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.CREATED: frozenset({OrderStatus.VALIDATED, OrderStatus.COMPENSATING}),
    OrderStatus.VALIDATED: frozenset({OrderStatus.PLACED, OrderStatus.COMPENSATING}),
    OrderStatus.PLACED: frozenset({OrderStatus.CONFIRMED, OrderStatus.COMPENSATING}),
    OrderStatus.COMPENSATING: frozenset({OrderStatus.FAILED}),
    OrderStatus.CONFIRMED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


def can_move(source: OrderStatus, target: OrderStatus) -> bool:
    """Whether the saga may go from `source` to `target` (states only move forward)."""
    return target in _FORWARD[source]


@dataclass(frozen=True)
class Line:
    """One cart line as the group finalized it."""

    line_id: str
    sku: str
    name: str
    quantity: int
    unit_price_minor: int

    @property
    def amount_minor(self) -> int:
        """quantity × unit price."""
        return self.quantity * self.unit_price_minor


@dataclass
class Share:
    """One member's secured payment that the order captures (or releases)."""

    member_id: str
    payment_id: str
    amount_minor: int
    status: ShareStatus = ShareStatus.PENDING


@dataclass(frozen=True)
class Step:
    """One row of `order_events`: a saga step, its outcome and when it finished."""

    step: str
    outcome: str
    detail: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class OrderCreated:
    """A new order was recorded for a finalized group."""

    order_id: str
    group_id: str
    merchant_id: str
    currency: str
    total_minor: int


@dataclass(frozen=True)
class OrderConfirmed:
    """The merchant placed the order and every share was captured."""

    order_id: str
    group_id: str
    merchant_id: str
    merchant_order_id: str
    currency: str
    total_minor: int
    payment_ids: tuple[str, ...]


@dataclass(frozen=True)
class OrderFailed:
    """The order failed and compensation finished: nothing is held or kept."""

    order_id: str
    group_id: str
    merchant_id: str
    reason: FailureReason | None
    detail: str
    payment_ids: tuple[str, ...]


OrderEvent = OrderCreated | OrderConfirmed | OrderFailed


@dataclass
class Order:
    """The merchant order for one finalized group (one order per group)."""

    order_id: str
    group_id: str
    merchant_id: str
    currency: str
    total_minor: int
    fees_minor: int
    tax_minor: int
    tip_minor: int
    lines: list[Line]
    shares: list[Share]
    status: OrderStatus = OrderStatus.CREATED
    failure_reason: FailureReason | None = None
    failure_detail: str = ""
    reservation_id: str = ""
    merchant_order_id: str = ""
    merchant_cancelled: bool = False
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    steps: list[Step] = field(default_factory=list)
    new_steps: list[Step] = field(default_factory=list)
    #: domain events recorded since the order was loaded (the unit of work publishes them)
    events: list[OrderEvent] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        order_id: str,
        group_id: str,
        merchant_id: str,
        currency: str,
        total_minor: int,
        fees_minor: int,
        tax_minor: int,
        tip_minor: int,
        lines: list[Line],
        shares: list[Share],
    ) -> Order:
        """A new CREATED order; it records OrderCreated (published only if it is stored)."""
        order = cls(
            order_id=order_id,
            group_id=group_id,
            merchant_id=merchant_id,
            currency=currency,
            total_minor=total_minor,
            fees_minor=fees_minor,
            tax_minor=tax_minor,
            tip_minor=tip_minor,
            lines=lines,
            shares=shares,
        )
        order.events.append(OrderCreated(order_id, group_id, merchant_id, currency, total_minor))
        return order

    @property
    def payment_ids(self) -> tuple[str, ...]:
        """The payments of every share, in share order."""
        return tuple(s.payment_id for s in self.shares)

    def _record(self, step: str, outcome: str, detail: str = "") -> None:
        recorded = Step(step, outcome, detail)
        self.steps.append(recorded)
        self.new_steps.append(recorded)

    def _move(self, target: OrderStatus) -> None:
        if not can_move(self.status, target):
            raise FailedPreconditionError(
                f"order {self.order_id} cannot go from {self.status} to {target}",
                reason="ILLEGAL_TRANSITION",
            )
        self.status = target

    def share(self, payment_id: str) -> Share:
        """The share paid with `payment_id`."""
        for share in self.shares:
            if share.payment_id == payment_id:
                return share
        raise KeyError(payment_id)

    def mark_validated(self) -> None:
        """Items, stock and prices matched the merchant's catalogue."""
        self._move(OrderStatus.VALIDATED)
        self._record("validate", "ok")

    def mark_reserved(self, reservation_id: str) -> None:
        """The merchant holds the stock for this order."""
        if self.status is not OrderStatus.VALIDATED:
            raise FailedPreconditionError(f"order {self.order_id} is {self.status}, not VALIDATED")
        self.reservation_id = reservation_id
        self._record("reserve", "ok", reservation_id)

    def mark_placed(self, merchant_order_id: str) -> None:
        """The merchant accepted the order."""
        self._move(OrderStatus.PLACED)
        self.merchant_order_id = merchant_order_id
        self._record("place", "ok", merchant_order_id)

    def mark_captured(self, payment_id: str) -> None:
        """One share was captured."""
        if self.status is not OrderStatus.PLACED:
            raise FailedPreconditionError(f"order {self.order_id} is {self.status}, not PLACED")
        self.share(payment_id).status = ShareStatus.CAPTURED
        self._record("capture", "ok", payment_id)

    @property
    def pending_shares(self) -> list[Share]:
        """Shares still to capture."""
        return [s for s in self.shares if s.status is ShareStatus.PENDING]

    def mark_confirmed(self) -> None:
        """Placed and every share captured."""
        if self.pending_shares:
            raise FailedPreconditionError(f"order {self.order_id} has uncaptured shares")
        self._move(OrderStatus.CONFIRMED)
        self._record("confirm", "ok")
        self.events.append(
            OrderConfirmed(
                self.order_id,
                self.group_id,
                self.merchant_id,
                self.merchant_order_id,
                self.currency,
                self.total_minor,
                self.payment_ids,
            )
        )

    def fail(self, reason: FailureReason, detail: str, step: str) -> None:
        """A forward step failed for good: start compensating."""
        self._move(OrderStatus.COMPENSATING)
        self.failure_reason = reason
        self.failure_detail = detail[:1000]
        self._record(step, "failed", f"{reason}: {detail}"[:1000])

    @property
    def merchant_touched(self) -> bool:
        """Whether the merchant may hold stock or an order for us (reserve or place was tried)."""
        return bool(self.reservation_id or self.merchant_order_id) or any(
            s.step in ("reserve", "place") for s in self.steps
        )

    def mark_merchant_cancelled(self, detail: str, outcome: str = "ok") -> None:
        """Compensation: the merchant order (or reservation) is cancelled (or the merchant
        refused to cancel it: `outcome` "refused"; nothing more we can do there)."""
        if self.status is not OrderStatus.COMPENSATING:
            raise FailedPreconditionError(f"order {self.order_id} is not compensating")
        self.merchant_cancelled = True
        self._record("cancel_merchant_order", outcome, detail)

    def mark_released(self, payment_id: str, status: ShareStatus, detail: str = "") -> None:
        """Compensation: one share's hold voided or capture refunded."""
        if self.status is not OrderStatus.COMPENSATING:
            raise FailedPreconditionError(f"order {self.order_id} is not compensating")
        if not status.released:
            raise ValueError(f"{status} does not release money")
        self.share(payment_id).status = status
        step = "refund" if status is ShareStatus.REFUNDED else "void"
        self._record(step, "ok", f"{payment_id} {detail}".strip())

    @property
    def unreleased_shares(self) -> list[Share]:
        """Shares whose money is still held or captured."""
        return [s for s in self.shares if not s.status.released]

    def mark_failed(self) -> None:
        """Compensation finished: nothing is held or kept."""
        if self.unreleased_shares:
            raise FailedPreconditionError(f"order {self.order_id} still holds money")
        self._move(OrderStatus.FAILED)
        self._record("fail", "ok", str(self.failure_reason or ""))
        self.events.append(
            OrderFailed(
                self.order_id,
                self.group_id,
                self.merchant_id,
                self.failure_reason,
                self.failure_detail,
                self.payment_ids,
            )
        )
