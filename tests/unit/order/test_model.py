"""The order aggregate: forward-only transitions and what each step records."""

from __future__ import annotations

import pytest

from mppo.platform.errors import FailedPreconditionError
from order_svc.domain.model import (
    FailureReason,
    Line,
    Order,
    OrderStatus,
    Share,
    ShareStatus,
    can_move,
)


def _order() -> Order:
    return Order(
        order_id="o1",
        group_id="g1",
        merchant_id="sandbox",
        currency="USD",
        total_minor=2400,
        fees_minor=0,
        tax_minor=0,
        tip_minor=0,
        lines=[Line("l1", "PIZZA", "Pizza", 2, 1200)],
        shares=[Share("m1", "p1", 1200), Share("m2", "p2", 1200)],
    )


def test_happy_path_records_every_step() -> None:
    order = _order()
    order.mark_validated()
    order.mark_reserved("res1")
    order.mark_placed("mo1")
    with pytest.raises(FailedPreconditionError):
        order.mark_confirmed()  # shares not captured yet
    order.mark_captured("p1")
    order.mark_captured("p2")
    order.mark_confirmed()
    assert order.status is OrderStatus.CONFIRMED
    assert [s.step for s in order.new_steps] == [
        "validate",
        "reserve",
        "place",
        "capture",
        "capture",
        "confirm",
    ]


def test_states_only_move_forward() -> None:
    assert not can_move(OrderStatus.PLACED, OrderStatus.VALIDATED)
    assert not can_move(OrderStatus.CONFIRMED, OrderStatus.COMPENSATING)
    assert not can_move(OrderStatus.FAILED, OrderStatus.COMPENSATING)
    order = _order()
    with pytest.raises(FailedPreconditionError):
        order.mark_placed("mo1")  # not validated
    order.mark_validated()
    order.mark_reserved("r")
    order.mark_placed("mo")
    order.mark_captured("p1")
    order.mark_captured("p2")
    order.mark_confirmed()
    with pytest.raises(FailedPreconditionError):
        order.fail(FailureReason.CAPTURE_FAILED, "late", "capture")


def test_failure_needs_every_share_released_before_failed() -> None:
    order = _order()
    order.mark_validated()
    order.mark_reserved("r")
    order.mark_placed("mo")
    order.mark_captured("p1")
    order.fail(FailureReason.CAPTURE_FAILED, "p2 declined", "capture")
    assert order.status is OrderStatus.COMPENSATING
    assert order.merchant_touched
    order.mark_merchant_cancelled("cancelled")
    with pytest.raises(FailedPreconditionError):
        order.mark_failed()
    order.mark_released("p1", ShareStatus.REFUNDED)
    order.mark_released("p2", ShareStatus.VOIDED)
    with pytest.raises(ValueError, match="does not release"):
        order.mark_released("p2", ShareStatus.CAPTURED)
    order.mark_failed()
    assert order.status.terminal
    assert order.failure_reason is FailureReason.CAPTURE_FAILED


def test_validation_failure_never_touched_the_merchant() -> None:
    order = _order()
    order.fail(FailureReason.PRICE_MISMATCH, "changed", "validate")
    assert not order.merchant_touched
