"""CloseCheckout against the real payment service and sandbox provider: a payment link whose
share is no longer wanted is expired at the provider, so its hosted page refuses payment and no
hold is ever placed; a link the payer completed first keeps its hold (the caller releases it)."""

from __future__ import annotations

import grpc
import pytest

from mppo.payment.v1 import payment_pb2, payment_service_pb2
from mppo.platform.identity import service_metadata
from tests.integration.payment.conftest import PaymentStack
from tests.integration.payment.test_payment_flow import authorized, eventually

P = payment_pb2
AS_GROUP = service_metadata("group")


def close(payment_id: str) -> payment_service_pb2.CloseCheckoutRequest:
    return payment_service_pb2.CloseCheckoutRequest(payment_id=payment_id, reason="test")


async def test_a_closed_checkout_refuses_payment_and_holds_nothing(stack: PaymentStack) -> None:
    payment = await stack.create(1100)
    closed = await stack.stub.CloseCheckout(
        close(payment.payment_id), metadata=AS_GROUP, timeout=20
    )
    assert closed.payment.status == P.PAYMENT_STATUS_VOIDED
    again = await stack.stub.CloseCheckout(close(payment.payment_id), metadata=AS_GROUP, timeout=20)
    assert again.payment.status == P.PAYMENT_STATUS_VOIDED
    answer = await stack.sandbox.pay(payment.payment_link)
    assert answer.get("outcome") is None, answer  # the hosted page refuses it
    assert answer["error"]["code"] == "checkout_not_open"
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["totals"]["hold"] == 0
    assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_VOIDED
    await eventually(
        lambda: stack.events_of(payment.payment_id),
        lambda e: e == ["payment.requested", "payment.voided"],
    )


async def test_a_checkout_paid_first_keeps_its_hold_for_the_caller_to_release(
    stack: PaymentStack,
) -> None:
    payment = await authorized(stack, 1200)
    kept = await stack.stub.CloseCheckout(close(payment.payment_id), metadata=AS_GROUP, timeout=20)
    assert kept.payment.status == P.PAYMENT_STATUS_AUTHORIZED
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["held"] == 1200
    # the page completed before the close landed at the provider, the webhook not yet here
    racing = await stack.create(1300, member="m-racing")
    await stack.sandbox.faults(hold=True)  # webhooks held back
    try:
        outcome = await stack.sandbox.pay(racing.payment_link)
        assert outcome["outcome"] == "requires_capture", outcome
        closed = await stack.stub.CloseCheckout(
            close(racing.payment_id), metadata=AS_GROUP, timeout=20
        )
        assert closed.payment.status == P.PAYMENT_STATUS_AUTHORIZED
    finally:
        await stack.sandbox.faults(hold=False)
        await stack.sandbox.release()


async def test_only_the_group_service_closes_checkouts(stack: PaymentStack) -> None:
    payment = await stack.create(900, member="m-only")
    for metadata in (
        service_metadata("order"),
        service_metadata("tests"),
        (("x-mppo-user-id", "mallory"),),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.stub.CloseCheckout(close(payment.payment_id), metadata=metadata, timeout=20)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_REQUIRES_ACTION
