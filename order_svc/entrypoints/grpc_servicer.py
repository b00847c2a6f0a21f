"""The OrderService gRPC servicer: thin, proto in, command out, proto back.

RPCs not yet built answer UNIMPLEMENTED (the generated base class), so callers get a clear
status rather than a fake result.
"""

from __future__ import annotations

from mppo.order.v1 import order_service_pb2_grpc
from mppo.platform.runtime import Infra


class OrderServiceServicer(order_service_pb2_grpc.OrderServiceServicer):
    """Serves mppo.order.v1.OrderService."""

    def __init__(self, infra: Infra) -> None:
        self._infra = infra
