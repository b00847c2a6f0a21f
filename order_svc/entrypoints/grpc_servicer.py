"""The OrderService gRPC servicer: thin, proto in, command out, proto back.

CreateOrder is internal: only our services (``x-mppo-service`` metadata) may call it; an end
user (``x-mppo-user-id`` only) gets PERMISSION_DENIED. GetOrder / GetOrderByGroup need an
identity; which users may see which order is the gateway's and group service's concern (an
order id is only handed to the group's members).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc
from mppo.platform.errors import FieldViolation, InvalidArgumentError, PermissionDeniedError
from mppo.platform.identity import caller_from
from mppo.platform.membership import GroupAccess
from mppo.platform.rpc_status import grpc_errors
from order_svc.domain.model import Order
from order_svc.domain.validator import check_consistency
from order_svc.service_layer.messages import order_from
from order_svc.service_layer.orders import OrderQueries, create_order

Context = grpc.aio.ServicerContext[Any, Any]


def _metadata(context: Context) -> tuple[tuple[str, Any], ...]:
    return tuple(context.invocation_metadata() or ())


def _checked_order(request: order_service_pb2.CreateOrderRequest) -> Order:
    """The order the request describes, or INVALID_ARGUMENT naming what does not add up."""
    violations: list[FieldViolation] = []
    if not request.group_id:
        violations.append(FieldViolation("group_id", "required"))
    if not request.merchant_id:
        violations.append(FieldViolation("merchant_id", "required"))
    currency = request.total.currency_code
    for index, share in enumerate(request.shares):
        if share.amount.currency_code != currency:
            violations.append(
                FieldViolation(f"shares[{index}].amount.currency_code", f"must be {currency}")
            )
    order = order_from(request)
    for problem in check_consistency(
        order.lines,
        order.shares,
        currency=order.currency,
        total_minor=order.total_minor,
        fees_minor=order.fees_minor,
        tax_minor=order.tax_minor,
        tip_minor=order.tip_minor,
    ):
        violations.append(FieldViolation("order", problem))
    if violations:
        raise InvalidArgumentError("the order is not consistent", violations)
    return order


class OrderServiceServicer(order_service_pb2_grpc.OrderServiceServicer):
    """Serves mppo.order.v1.OrderService."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        queries: OrderQueries,
        wake: Callable[[], None],
        access: GroupAccess,
    ) -> None:
        self._sessions = sessions
        self._queries = queries
        self._wake = wake
        self._access = access

    @grpc_errors
    async def CreateOrder(  # noqa: N802 (gRPC method name)
        self, request: order_service_pb2.CreateOrderRequest, context: Context
    ) -> order_service_pb2.CreateOrderResponse:
        """Record the group's order (or return the one it has) and start the saga."""
        caller = caller_from(_metadata(context))
        if not caller.service:
            raise PermissionDeniedError("CreateOrder is internal", reason="INTERNAL_ONLY")
        order = _checked_order(request)
        async with self._sessions() as session, session.begin():
            order_id, created = await create_order(session, order)
        if created:
            self._wake()
        return order_service_pb2.CreateOrderResponse(order=await self._queries.get(order_id))

    @grpc_errors
    async def GetOrder(  # noqa: N802
        self, request: order_service_pb2.GetOrderRequest, context: Context
    ) -> order_service_pb2.GetOrderResponse:
        """One order with its steps."""
        caller = caller_from(_metadata(context))
        if not request.order_id:
            raise InvalidArgumentError(
                "order_id required", [FieldViolation("order_id", "required")]
            )
        order = await self._queries.get(request.order_id)
        await self._access.view(caller, order.group_id)  # members of the group only
        return order_service_pb2.GetOrderResponse(order=order)

    @grpc_errors
    async def GetOrderByGroup(  # noqa: N802
        self, request: order_service_pb2.GetOrderByGroupRequest, context: Context
    ) -> order_service_pb2.GetOrderByGroupResponse:
        """The group's order."""
        caller = caller_from(_metadata(context))
        if not request.group_id:
            raise InvalidArgumentError(
                "group_id required", [FieldViolation("group_id", "required")]
            )
        await self._access.view(caller, request.group_id)  # members of the group only
        return order_service_pb2.GetOrderByGroupResponse(
            order=await self._queries.get_by_group(request.group_id)
        )
