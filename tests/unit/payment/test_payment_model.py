"""The Payment state machine: forward only, skipped steps filled in, one event per change."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mppo.platform.errors import FailedPreconditionError, InvalidArgumentError
from payment_svc.domain.model import (
    TERMINAL,
    Observation,
    Payment,
    PaymentStatus,
    ordering,
)

S = PaymentStatus


def new_payment(*, can_authorize: bool = True) -> Payment:
    payment = Payment("p1", "g1", "m1", 1, 1000, "USD", "sandbox", can_authorize=can_authorize)
    payment.attach_checkout("pi_1", "http://sandbox/checkout/cs_1")
    return payment


def kinds(payment: Payment) -> list[str]:
    return [e.kind for e in payment.events]


def test_authorize_then_capture() -> None:
    payment = new_payment()
    assert payment.observe(Observation(S.AUTHORIZED, 1000), reason="webhook", actor="psp")
    assert payment.observe(
        Observation(S.CAPTURED, amount_captured_minor=1000), reason="c", actor="x"
    )
    assert kinds(payment) == ["requested", "succeeded", "captured"]
    assert [c.to_status for c in payment.changes] == [S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED]


def test_capture_seen_first_fills_in_the_authorization() -> None:
    payment = new_payment()
    assert payment.observe(
        Observation(S.CAPTURED, amount_captured_minor=1000), reason="r", actor="a"
    )
    assert kinds(payment) == ["requested", "succeeded", "captured"]
    assert not payment.events[1].captured
    assert not payment.observe(Observation(S.AUTHORIZED, 1000), reason="late", actor="a")
    assert payment.status is S.CAPTURED


def test_provider_without_holds_succeeds_captured() -> None:
    payment = new_payment(can_authorize=False)
    assert ordering(S.REQUIRES_ACTION, S.CAPTURED, can_authorize=False) == "next"
    payment.observe(Observation(S.CAPTURED, amount_captured_minor=1000), reason="r", actor="a")
    assert kinds(payment) == ["requested", "succeeded", "captured"]
    assert payment.events[1].captured


def test_partial_refunds_add_up() -> None:
    payment = new_payment()
    payment.observe(Observation(S.CAPTURED, amount_captured_minor=1000), reason="r", actor="a")
    payment.observe(
        Observation(S.PARTIALLY_REFUNDED, amount_captured_minor=1000, amount_refunded_minor=300),
        reason="r",
        actor="a",
    )
    payment.observe(Observation(S.REFUNDED, amount_refunded_minor=1000), reason="r", actor="a")
    refunds = [e.amount_minor for e in payment.events if e.kind == "refunded"]
    assert refunds == [300, 700]
    assert payment.amount_refunded_minor == 1000


def test_terminal_states_never_move() -> None:
    payment = new_payment()
    payment.observe(Observation(S.FAILED, failure_reason="card_declined"), reason="r", actor="a")
    assert payment.failure_reason == "card_declined"
    for status in S:
        assert not payment.observe(Observation(status, 1000, 1000), reason="r", actor="a")
    assert payment.status is S.FAILED


def test_command_guards() -> None:
    payment = new_payment()
    with pytest.raises(FailedPreconditionError):
        payment.capture_amount(None)
    with pytest.raises(FailedPreconditionError):
        payment.refund_amount(None)
    payment.observe(Observation(S.AUTHORIZED, 1000), reason="r", actor="a")
    assert payment.capture_amount(None) == 1000
    with pytest.raises(InvalidArgumentError):
        payment.capture_amount(1001)
    payment.ensure_voidable()


@given(st.lists(st.sampled_from(list(S)), max_size=12))
def test_any_report_sequence_only_moves_forward(reports: list[PaymentStatus]) -> None:
    payment = new_payment()
    rank = [S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED]
    for status in reports:
        before = payment.status
        payment.observe(
            Observation(status, 1000, 1000, 500 if status is S.PARTIALLY_REFUNDED else 1000),
            reason="r",
            actor="a",
        )
        if before in TERMINAL:
            assert payment.status is before
        elif payment.status in rank and before in rank:
            assert rank.index(payment.status) >= rank.index(before)
    # one history row and at most one event per distinct state entered
    entered = [c.to_status for c in payment.changes]
    assert len(entered) == len(set(entered)) or S.PARTIALLY_REFUNDED in entered
    assert kinds(payment).count("succeeded") <= 1
    assert kinds(payment).count("captured") <= 1
