"""The PaymentService gRPC servicer: thin, proto in, command out, proto back.

RPCs not yet built answer UNIMPLEMENTED (the generated base class), so callers get a clear
status rather than a fake result.
"""

from __future__ import annotations

from mppo.payment.v1 import payment_service_pb2_grpc
from mppo.platform.runtime import Infra


class PaymentServiceServicer(payment_service_pb2_grpc.PaymentServiceServicer):
    """Serves mppo.payment.v1.PaymentService."""

    def __init__(self, infra: Infra) -> None:
        self._infra = infra
