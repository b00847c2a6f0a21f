"""kill -9 (os._exit via MPPO_FAULT) between merchant placement and capture, restart: the order
completes, with one merchant order and one capture per share."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest

from mppo.order.v1 import order_pb2
from order_svc.service_layer.saga import FAULT_AFTER_MERCHANT_PLACE, FAULT_BEFORE_CAPTURE
from tests.integration.order.conftest import OrderStack
from tests.support.services import wait_serving


@pytest.mark.parametrize("fault", [FAULT_AFTER_MERCHANT_PLACE, FAULT_BEFORE_CAPTURE])
async def test_crash_between_placement_and_capture_resumes_without_a_second_merchant_order(
    order_stack: OrderStack, fault: str
) -> None:
    # its own database and subjects, so the module's order service does not take the order
    stack = dataclasses.replace(
        order_stack,
        prefix=f"t{uuid.uuid4().hex[:6]}",
        database_url=await order_stack.infra.create_database(f"t_{uuid.uuid4().hex[:12]}"),
    )
    crashing = stack.start_order(MPPO_FAULT=fault)
    try:
        await wait_serving(crashing)
        stack.order = crashing
        group = stack.finalized([("PIZZA-PEPPERONI", 2, 1450)], members=2)
        await stack.publish(group)
        code = await asyncio.wait_for(asyncio.to_thread(crashing.process.wait), 30)
    finally:
        crashing.stop()
    assert code == 137, crashing.log_text()
    assert f"fault injection: exiting at {fault}" in crashing.log_text()

    conn = await asyncpg.connect(stack.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT order_id, status FROM orders WHERE group_id = $1", group.group_id
        )
    finally:
        await conn.close()
    assert row is not None
    order_id = row["order_id"]
    expected_status = "VALIDATED" if fault == FAULT_AFTER_MERCHANT_PLACE else "PLACED"
    assert row["status"] == expected_status
    assert len(await stack.merchant.orders_for(order_id)) == 1  # placed at the merchant
    assert not set(stack.payments.ops("capture")) & {s.payment_id for s in group.shares}

    restarted = stack.start_order()
    try:
        await wait_serving(restarted)
        stack.order = restarted
        order = await stack.order_for_group(group.group_id, within=40)
        confirmed = await stack.order_events("order.confirmed", order_id)
    finally:
        restarted.stop()
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order
    merchant_orders = await stack.merchant.orders_for(order_id)
    assert [m["merchant_order_id"] for m in merchant_orders] == [order.merchant_order_id]
    for share in group.shares:
        assert stack.payments.ops("capture").count(share.payment_id) == 1
        assert stack.payments.kept(share.payment_id) == share.amount.amount_minor
    assert [s.step for s in order.steps].count("place") == 1
    assert len(confirmed) == 1
