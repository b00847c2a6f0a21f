"""A local mppo.order.v1.OrderService answering QuoteCart the way the order service does (the
same catalogue check, over the sandbox merchant's default catalogue), for stacks that run the
group service without an order service and a merchant; `fail_next` makes it unavailable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from mppo.order.v1 import order_service_pb2 as pb
from mppo.order.v1 import order_service_pb2_grpc
from mppo.platform.errors import FieldViolation, InvalidArgumentError, UnavailableError
from mppo.platform.rpc_status import grpc_errors
from order_svc.domain.model import Line
from order_svc.domain.validator import CatalogueItem, quote_problems
from order_svc.sandbox_merchant.catalogue import load_catalogue

Ctx = grpc.aio.ServicerContext[Any, Any]


def default_catalogue() -> dict[str, CatalogueItem]:
    """The sandbox merchant's default catalogue."""
    return {
        sku: CatalogueItem(
            sku, str(i["name"]), int(i["unit_price_minor"]), str(i["currency"]), int(i["stock"])
        )
        for sku, i in load_catalogue(None).items()
    }


@dataclass
class FakeOrderService(order_service_pb2_grpc.OrderServiceServicer):
    """QuoteCart over `catalogue`; counts the quotes, fails the next `fail_next` ones."""

    catalogue: dict[str, CatalogueItem] = field(default_factory=default_catalogue)
    quotes: int = 0
    fail_next: int = 0

    @grpc_errors
    async def QuoteCart(  # noqa: N802
        self, request: pb.QuoteCartRequest, context: Ctx
    ) -> pb.QuoteCartResponse:
        self.quotes += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise UnavailableError("merchant down (test)")
        lines = [
            Line(i.line_id, i.sku, i.name, i.quantity, i.unit_price_minor) for i in request.items
        ]
        problems = quote_problems(lines, request.currency_code, self.catalogue)
        if problems:
            raise InvalidArgumentError(
                "the cart does not match the merchant's catalogue",
                [FieldViolation(f"items[{p.index}].{p.field}", p.detail) for p in problems],
                reason="CATALOGUE_MISMATCH",
            )
        return pb.QuoteCartResponse(items=request.items)


async def start_fake_orders(port: int) -> tuple[grpc.aio.Server, FakeOrderService]:
    """Serve a FakeOrderService on 127.0.0.1:`port` (plaintext)."""
    server = grpc.aio.server()
    fake = FakeOrderService()  # type: ignore[abstract]  # unused RPCs: UNIMPLEMENTED
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, fake
