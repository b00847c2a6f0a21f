"""QuoteCart against the real order service and sandbox merchant: a cart is priced against the
merchant's catalogue (GET /v1/catalogue); a line the catalogue prices differently is named in a
field violation; a merchant that cannot answer makes it UNAVAILABLE; only the group service may
ask."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from mppo.common.v1 import cart_pb2
from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc
from mppo.platform.identity import service_metadata
from mppo.platform.rpc_status import status_from_error
from tests.integration.order.conftest import OrderStack


def cart(*lines: tuple[str, int, int]) -> order_service_pb2.QuoteCartRequest:
    return order_service_pb2.QuoteCartRequest(
        merchant_id="sandbox",
        currency_code="USD",
        items=[
            cart_pb2.LineItem(line_id=f"l{i}", sku=s, name=s, quantity=q, unit_price_minor=p)
            for i, (s, q, p) in enumerate(lines)
        ],
    )


def fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = status_from_error(err)
    assert status is not None
    found: list[str] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [v.field for v in bad.field_violations]
    return found


async def test_quote_cart_prices_a_cart_against_the_merchant_catalogue(
    order_stack: OrderStack,
) -> None:
    async with grpc.aio.insecure_channel(order_stack.order.addr) as channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        as_group = service_metadata("group")
        quoted = await stub.QuoteCart(
            cart(("PIZZA-MARGHERITA", 2, 1200), ("SODA-CAN", 3, 250)), metadata=as_group, timeout=15
        )
        assert quoted.items_total.amount_minor == 3150
        assert [i.sku for i in quoted.items] == ["PIZZA-MARGHERITA", "SODA-CAN"]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.QuoteCart(
                cart(("SODA-CAN", 1, 250), ("PIZZA-MARGHERITA", 1, 1), ("NOPE", 1, 100)),
                metadata=as_group,
                timeout=15,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fields(refused.value) == ["items[1].unit_price_minor", "items[2].sku"]
        for caller in (service_metadata("payment"), (("x-mppo-user-id", "mallory"),)):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.QuoteCart(cart(("SODA-CAN", 1, 250)), metadata=caller, timeout=15)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await order_stack.merchant.control(
            "faults", {"action": "catalogue", "fault": "error", "times": -1}
        )
        try:
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await stub.QuoteCart(cart(("SODA-CAN", 1, 250)), metadata=as_group, timeout=20)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await order_stack.merchant.control("reset", {})
