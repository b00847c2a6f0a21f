"""Wiring of the order service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

from pathlib import Path

import grpc

from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc
from mppo.platform.runtime import Infra, ServiceSpec
from order_svc.entrypoints.grpc_servicer import OrderServiceServicer

SERVICE_NAME = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the order service's servicers to `server`."""
    # The RPCs still to be built answer UNIMPLEMENTED through the generated base class.
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(
        OrderServiceServicer(infra),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="order",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
)
