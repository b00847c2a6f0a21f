"""The NotificationService gRPC servicer: thin, proto in, command out, proto back.

RPCs not yet built answer UNIMPLEMENTED (the generated base class), so callers get a clear
status rather than a fake result.
"""

from __future__ import annotations

from mppo.notification.v1 import notification_service_pb2_grpc
from mppo.platform.runtime import Infra


class NotificationServiceServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """Serves mppo.notification.v1.NotificationService."""

    def __init__(self, infra: Infra) -> None:
        self._infra = infra
