"""Wiring of the notification service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

from pathlib import Path

import grpc

from mppo.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from mppo.platform.runtime import Infra, ServiceSpec
from notification_svc.entrypoints.grpc_servicer import NotificationServiceServicer

SERVICE_NAME = notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the notification service's servicers to `server`."""
    # The RPCs still to be built answer UNIMPLEMENTED through the generated base class.
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationServiceServicer(infra),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="notification",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
)
