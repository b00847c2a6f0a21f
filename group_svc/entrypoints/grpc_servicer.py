"""The GroupService gRPC servicer: thin, proto in, command out, proto back.

RPCs not yet built answer UNIMPLEMENTED (the generated base class), so callers get a clear
status rather than a fake result.
"""

from __future__ import annotations

from mppo.group.v1 import group_service_pb2_grpc
from mppo.platform.runtime import Infra


class GroupServiceServicer(group_service_pb2_grpc.GroupServiceServicer):
    """Serves mppo.group.v1.GroupService."""

    def __init__(self, infra: Infra) -> None:
        self._infra = infra
