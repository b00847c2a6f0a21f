"""The placement saga end to end: group.finalized on NATS → real order service → real sandbox
merchant → PaymentService captures (or voids/refunds) → order.confirmed / order.failed."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mppo.order.v1 import order_events_pb2, order_pb2, order_service_pb2, order_service_pb2_grpc
from mppo.payment.v1 import payment_pb2
from mppo.platform.identity import USER_ID_KEY, service_metadata
from tests.integration.order.conftest import OrderStack

PIZZA, SODA, TRUFFLE = ("PIZZA-MARGHERITA", 1200), ("SODA-CAN", 250), ("TRUFFLE-SPECIAL", 3200)


async def test_finalized_group_becomes_one_confirmed_order_with_every_share_captured(
    order_stack: OrderStack,
) -> None:
    stack = order_stack
    group = stack.finalized(
        [(PIZZA[0], 2, PIZZA[1]), (SODA[0], 3, SODA[1])], fees=199, tax=250, tip=300, members=3
    )
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)

    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order
    assert order.total.amount_minor == 2 * 1200 + 3 * 250 + 199 + 250 + 300
    assert all(s.status == order_pb2.ORDER_SHARE_STATUS_CAPTURED for s in order.shares)
    for share in group.shares:
        assert stack.payments.kept(share.payment_id) == share.amount.amount_minor
        assert stack.payments.ops("capture").count(share.payment_id) == 1
    assert stack.payments.callers == {"order"}
    merchant_orders = await stack.merchant.orders_for(order.order_id)
    assert [m["merchant_order_id"] for m in merchant_orders] == [order.merchant_order_id]
    assert merchant_orders[0]["status"] == "placed"
    steps = [(s.step, s.outcome) for s in order.steps]
    assert steps == [
        ("validate", "ok"),
        ("reserve", "ok"),
        ("place", "ok"),
        ("capture", "ok"),
        ("capture", "ok"),
        ("capture", "ok"),
        ("confirm", "ok"),
    ]
    assert all(s.step_time.seconds > 0 for s in order.steps)
    confirmed = await stack.order_events("order.confirmed", order.order_id)
    assert len(confirmed) == 1
    assert isinstance(confirmed[0], order_events_pb2.OrderConfirmed)
    assert confirmed[0].merchant_order_id == order.merchant_order_id
    created = await stack.order_events("order.created", order.order_id)
    assert len(created) == 1


async def test_same_group_finalized_three_times_places_one_merchant_order(
    order_stack: OrderStack,
) -> None:
    stack = order_stack
    group = stack.finalized([(PIZZA[0], 1, PIZZA[1])], members=1)
    # the same event redelivered twice, plus a duplicate event with another id
    first = await stack.publish(group)
    await stack.publish(group, event_id=first.event_id)
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED

    # a direct CreateOrder for the same group returns the same order
    async with grpc.aio.insecure_channel(stack.order.addr) as channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        request = order_service_pb2.CreateOrderRequest(
            group_id=group.group_id,
            merchant_id=group.merchant_id,
            items=group.items,
            total=group.total,
            shares=[
                order_pb2.OrderShare(
                    member_id=s.member_id, payment_id=s.payment_id, amount=s.amount
                )
                for s in group.shares
            ],
        )
        reply = await stub.CreateOrder(request, metadata=service_metadata("group"), timeout=5)
        assert reply.order.order_id == order.order_id
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateOrder(request, metadata=((USER_ID_KEY, "u1"),), timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    await asyncio.sleep(1.0)  # give any wrongly created second saga time to act
    assert len(await stack.merchant.orders_for(order.order_id)) == 1
    state = await stack.merchant.state()
    assert sum(1 for o in state["orders"] if o["reference"] == order.order_id) == 1
    assert stack.payments.ops("capture").count(group.shares[0].payment_id) == 1
    assert len(await stack.order_events("order.created", order.order_id)) == 1
    assert len(await stack.order_events("order.confirmed", order.order_id)) == 1


async def test_out_of_stock_fails_the_order_and_voids_every_hold(order_stack: OrderStack) -> None:
    stack = order_stack
    group = stack.finalized([(TRUFFLE[0], 2, TRUFFLE[1])])  # stock is 1
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)

    assert order.status == order_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK
    for share in group.shares:
        assert stack.payments.held(share.payment_id) == 0
        assert stack.payments.kept(share.payment_id) == 0
        assert share.payment_id in stack.payments.ops("void")
    assert not stack.payments.ops("capture") or not set(stack.payments.ops("capture")) & {
        s.payment_id for s in group.shares
    }
    failed = await stack.order_events("order.failed", order.order_id)
    assert len(failed) == 1
    assert failed[0].reason == order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK
    assert set(failed[0].payment_ids) == {s.payment_id for s in group.shares}


async def test_stock_taken_by_a_race_at_reservation_is_out_of_stock(
    order_stack: OrderStack,
) -> None:
    stack = order_stack
    await stack.merchant.control("faults", {"action": "reserve", "fault": "out_of_stock"})
    group = stack.finalized([(PIZZA[0], 1, PIZZA[1])])
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK
    assert ("reserve", "failed") in [(s.step, s.outcome) for s in order.steps]
    assert ("cancel_merchant_order", "ok") in [(s.step, s.outcome) for s in order.steps]
    assert all(stack.payments.held(s.payment_id) == 0 for s in group.shares)
    assert len(await stack.order_events("order.failed", order.order_id)) == 1


async def test_merchant_rejection_cancels_and_voids(order_stack: OrderStack) -> None:
    stack = order_stack
    before = (await stack.merchant.state())["catalogue"][PIZZA[0]]["stock"]
    await stack.merchant.control("faults", {"action": "place", "fault": "reject"})
    group = stack.finalized([(PIZZA[0], 2, PIZZA[1])])
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)

    assert order.status == order_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_MERCHANT_REJECTED
    assert await stack.merchant.orders_for(order.order_id) == []
    # the reservation was released: the stock is back
    assert (await stack.merchant.state())["catalogue"][PIZZA[0]]["stock"] == before
    assert all(stack.payments.held(s.payment_id) == 0 for s in group.shares)
    assert all(stack.payments.kept(s.payment_id) == 0 for s in group.shares)
    failed = await stack.order_events("order.failed", order.order_id)
    assert [f.reason for f in failed] == [order_pb2.ORDER_FAILURE_REASON_MERCHANT_REJECTED]


async def test_failed_capture_refunds_captured_shares_and_cancels_merchant_order(
    order_stack: OrderStack,
) -> None:
    stack = order_stack
    group = stack.finalized([(PIZZA[0], 3, PIZZA[1])], members=3, decline_capture=2)
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)

    assert order.status == order_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED
    first, second, declined = (s.payment_id for s in group.shares)
    assert stack.payments.ops("refund") == [first, second]
    assert all(stack.payments.kept(pid) == 0 for pid in (first, second, declined))
    assert all(stack.payments.held(pid) == 0 for pid in (first, second, declined))
    merchant_orders = await stack.merchant.orders_for(order.order_id)
    assert [m["status"] for m in merchant_orders] == ["cancelled"]
    steps = [s.step for s in order.steps if s.outcome == "ok"]
    # compensation order: merchant first, then the money
    assert steps.index("cancel_merchant_order") < steps.index("refund")
    failed = await stack.order_events("order.failed", order.order_id)
    assert [f.reason for f in failed] == [order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED]


async def test_a_lapsed_hold_fails_the_order_before_anyone_is_charged(
    order_stack: OrderStack,
) -> None:
    """Shares are read before the concurrent captures: when one can no longer be captured,
    nobody is charged and then refunded; every other hold is simply voided."""
    stack = order_stack
    group = stack.finalized([(PIZZA[0], 3, PIZZA[1])], members=3)
    first, lapsed, third = (s.payment_id for s in group.shares)
    stack.payments.payments[lapsed].status = payment_pb2.PAYMENT_STATUS_EXPIRED
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)

    assert order.status == order_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED
    ours = {first, lapsed, third}
    assert [pid for pid in stack.payments.ops("capture") if pid in ours] == []
    assert [pid for pid in stack.payments.ops("refund") if pid in ours] == []
    assert sorted(pid for pid in stack.payments.ops("void") if pid in ours) == sorted(
        [first, third]
    )
    assert all(stack.payments.kept(pid) == 0 for pid in (first, lapsed, third))
    assert all(stack.payments.held(pid) == 0 for pid in (first, third))


async def test_merchant_failing_once_and_timing_out_is_retried_with_the_same_key(
    order_stack: OrderStack,
) -> None:
    stack = order_stack
    await stack.merchant.control("faults", {"action": "reserve", "fault": "error"})
    await stack.merchant.control(
        "faults", {"action": "place", "fault": "timeout", "delay_seconds": 2}
    )
    group = stack.finalized([(SODA[0], 2, SODA[1])], members=1)
    await stack.publish(group)
    order = await stack.order_for_group(group.group_id)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order
    assert len(await stack.merchant.orders_for(order.order_id)) == 1
