"""Wiring of the group service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

from pathlib import Path

import grpc

from group_svc.entrypoints.grpc_servicer import GroupServiceServicer
from mppo.group.v1 import group_service_pb2, group_service_pb2_grpc
from mppo.platform.runtime import Infra, ServiceSpec

SERVICE_NAME = group_service_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the group service's servicers to `server`."""
    # The RPCs still to be built answer UNIMPLEMENTED through the generated base class.
    group_service_pb2_grpc.add_GroupServiceServicer_to_server(
        GroupServiceServicer(infra),  # type: ignore[abstract]
        server,
    )


SPEC = ServiceSpec(
    name="group",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
)
