"""Wiring of the payment service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

from pathlib import Path

import grpc

from mppo.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.runtime import Infra, ServiceSpec
from payment_svc.entrypoints.grpc_servicer import PaymentServiceServicer

SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the payment service's servicers to `server`."""
    # The RPCs still to be built answer UNIMPLEMENTED through the generated base class.
    payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
        PaymentServiceServicer(infra),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="payment",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
)
