"""Every Payment message the service returns carries `create_time` and `update_time`, the
payments row's own: creating, reading, listing, capturing and voiding, over gRPC against the
real payment service and sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from mppo.payment.v1 import payment_pb2, payment_service_pb2
from tests.integration.payment.conftest import AS_GROUP, AS_ORDER, METADATA, PaymentStack

T = TypeVar("T")
P = payment_pb2


async def eventually(
    check: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 15
) -> T:
    deadline = asyncio.get_running_loop().time() + within
    value = await check()
    while not ok(value) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        value = await check()
    assert ok(value), value
    return value


def times(payment: P.Payment) -> tuple[datetime, datetime]:
    assert payment.HasField("create_time"), payment
    assert payment.HasField("update_time"), payment
    return (
        payment.create_time.ToDatetime(tzinfo=UTC),
        payment.update_time.ToDatetime(tzinfo=UTC),
    )


async def row_times(stack: PaymentStack, payment_id: str) -> tuple[datetime, datetime]:
    (row,) = await stack.query(
        "SELECT created_at, updated_at FROM payments WHERE payment_id = $1", payment_id
    )
    return row["created_at"], row["updated_at"]


async def test_every_returned_payment_carries_the_rows_create_and_update_times(
    stack: PaymentStack,
) -> None:
    before = datetime.now(UTC)
    created = await stack.create(700)
    created_at, updated_at = times(created)
    assert before.replace(microsecond=0) <= created_at <= datetime.now(UTC)
    assert created_at <= updated_at
    # the checkout was attached after the insert: the answer is the row as it stands
    assert (created_at, updated_at) == await row_times(stack, created.payment_id)

    # a replay of the intent, GetPayment and ListPayments answer the same row
    again = await stack.create(700, group_id=created.group_id)
    assert times(again) == (created_at, updated_at)
    assert times(await stack.get(created.payment_id)) == (created_at, updated_at)
    listed = await stack.stub.ListPayments(
        payment_service_pb2.ListPaymentsRequest(group_id=created.group_id),
        metadata=METADATA,
        timeout=10,
    )
    assert [times(p) for p in listed.payments] == [(created_at, updated_at)]

    # paid: the update time moves on, the create time stays
    outcome = await stack.sandbox.pay(created.payment_link)
    assert outcome["outcome"] == "requires_capture", outcome
    held = await eventually(
        lambda: stack.get(created.payment_id), lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED
    )
    held_created, held_updated = times(held)
    assert held_created == created_at
    assert held_updated > updated_at
    assert (held_created, held_updated) == await row_times(stack, created.payment_id)

    # a capture answers with the row as written by the capture
    captured = (
        await stack.stub.CapturePayment(
            payment_service_pb2.CapturePaymentRequest(payment_id=created.payment_id),
            metadata=AS_ORDER,
            timeout=20,
        )
    ).payment
    assert captured.status == P.PAYMENT_STATUS_CAPTURED
    cap_created, cap_updated = times(captured)
    assert cap_created == created_at
    assert cap_updated >= held_updated
    assert (cap_created, cap_updated) == await row_times(stack, created.payment_id)


async def test_a_closed_checkout_answers_with_its_times(stack: PaymentStack) -> None:
    created = await stack.create(300)
    created_at, updated_at = times(created)
    closed = (
        await stack.stub.CloseCheckout(
            payment_service_pb2.CloseCheckoutRequest(
                payment_id=created.payment_id, reason="not needed"
            ),
            metadata=AS_GROUP,
            timeout=20,
        )
    ).payment
    assert closed.status == P.PAYMENT_STATUS_VOIDED
    closed_created, closed_updated = times(closed)
    assert closed_created == created_at
    assert closed_updated >= updated_at
    assert (closed_created, closed_updated) == await row_times(stack, created.payment_id)
