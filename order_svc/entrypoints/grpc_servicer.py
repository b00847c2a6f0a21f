"""The OrderService gRPC servicer: thin, proto in, command out, proto back.

CreateOrder and QuoteCart are internal: only the group service may call them (the runtime's
``service_only``); an end user gets PERMISSION_DENIED. GetOrder / GetOrderByGroup need an
identity and answer members of the order's group only (the group service says who they are).
Domain errors become gRPC status in the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc
from mppo.platform.identity import Caller, caller_from
from order_svc.domain.model import Line
from order_svc.service_layer.commands import CreateOrder, GetOrder, GetOrderByGroup, QuoteCart
from order_svc.service_layer.handlers import OrderHandlers
from order_svc.service_layer.messages import spec_from
from order_svc.service_layer.unit_of_work import OrderUnitOfWork

Context = grpc.aio.ServicerContext[Any, Any]


def _caller(context: Context) -> Caller:
    return caller_from(tuple(context.invocation_metadata() or ()))


class OrderServiceServicer(order_service_pb2_grpc.OrderServiceServicer):
    """Serves mppo.order.v1.OrderService."""

    def __init__(self, uow: Callable[[], OrderUnitOfWork], handlers: OrderHandlers) -> None:
        self._uow = uow
        self._handlers = handlers

    async def CreateOrder(  # noqa: N802 (gRPC method name)
        self, request: order_service_pb2.CreateOrderRequest, context: Context
    ) -> order_service_pb2.CreateOrderResponse:
        """Record the group's order (or return the one it has) and start the saga."""
        command = CreateOrder(caller=_caller(context), order=spec_from(request))
        order = await self._handlers.create_order(command, self._uow())
        return order_service_pb2.CreateOrderResponse(order=order)

    async def GetOrder(  # noqa: N802
        self, request: order_service_pb2.GetOrderRequest, context: Context
    ) -> order_service_pb2.GetOrderResponse:
        """One order with its steps."""
        query = GetOrder(caller=_caller(context), order_id=request.order_id)
        return order_service_pb2.GetOrderResponse(
            order=await self._handlers.get_order(query, self._uow())
        )

    async def GetOrderByGroup(  # noqa: N802
        self, request: order_service_pb2.GetOrderByGroupRequest, context: Context
    ) -> order_service_pb2.GetOrderByGroupResponse:
        """The group's order."""
        query = GetOrderByGroup(caller=_caller(context), group_id=request.group_id)
        return order_service_pb2.GetOrderByGroupResponse(
            order=await self._handlers.get_order_by_group(query, self._uow())
        )

    async def QuoteCart(  # noqa: N802
        self, request: order_service_pb2.QuoteCartRequest, context: Context
    ) -> order_service_pb2.QuoteCartResponse:
        """The cart priced against the merchant's catalogue (refused where it differs)."""
        query = QuoteCart(
            caller=_caller(context),
            merchant_id=request.merchant_id,
            currency=request.currency_code,
            lines=tuple(
                Line(i.line_id, i.sku, i.name, i.quantity, i.unit_price_minor)
                for i in request.items
            ),
        )
        lines = await self._handlers.quote_cart(query, self._uow())
        return order_service_pb2.QuoteCartResponse(
            items=[
                cart_pb2.LineItem(
                    line_id=ln.line_id,
                    sku=ln.sku,
                    name=ln.name,
                    quantity=ln.quantity,
                    unit_price_minor=ln.unit_price_minor,
                )
                for ln in lines
            ],
            items_total=money_pb2.Money(
                amount_minor=sum(ln.amount_minor for ln in lines),
                currency_code=request.currency_code,
            ),
        )
