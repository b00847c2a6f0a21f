"""A local PaymentService (gRPC) with a ledger, used while the real payment service cannot
capture yet. It runs the real gRPC path: the order service's client, metadata and error codes.

Semantics follow the contract: capture needs AUTHORIZED; void needs AUTHORIZED; refund needs
CAPTURED; an `idempotency-key` replay returns the first answer; callers must identify as a
service (`x-mppo-service`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from mppo.common.v1 import money_pb2
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.errors import FailedPreconditionError, NotFoundError, PermissionDeniedError
from mppo.platform.rpc_status import grpc_errors

Context = grpc.aio.ServicerContext[Any, Any]
S = payment_pb2


@dataclass
class FakePayment:
    payment_id: str
    amount: int
    currency: str
    status: S.PaymentStatus.ValueType = S.PAYMENT_STATUS_AUTHORIZED
    captured: int = 0
    refunded: int = 0
    decline_capture: bool = False


@dataclass
class FakePaymentService(payment_service_pb2_grpc.PaymentServiceServicer):
    payments: dict[str, FakePayment] = field(default_factory=dict)
    ledger: list[tuple[str, str, int]] = field(default_factory=list)
    replies: dict[str, bytes] = field(default_factory=dict)
    callers: set[str] = field(default_factory=set)

    def authorize(
        self, payment_id: str, amount: int, currency: str = "USD", *, decline_capture: bool = False
    ) -> None:
        self.payments[payment_id] = FakePayment(
            payment_id, amount, currency, decline_capture=decline_capture
        )
        self.ledger.append(("authorize", payment_id, amount))

    def held(self, payment_id: str) -> int:
        p = self.payments[payment_id]
        return p.amount if p.status == S.PAYMENT_STATUS_AUTHORIZED else 0

    def kept(self, payment_id: str) -> int:
        p = self.payments[payment_id]
        return p.captured - p.refunded

    def ops(self, op: str) -> list[str]:
        return [pid for kind, pid, _ in self.ledger if kind == op]

    def _message(self, p: FakePayment) -> payment_pb2.Payment:
        return payment_pb2.Payment(
            payment_id=p.payment_id,
            amount=money_pb2.Money(amount_minor=p.amount, currency_code=p.currency),
            amount_captured=money_pb2.Money(amount_minor=p.captured, currency_code=p.currency),
            amount_refunded=money_pb2.Money(amount_minor=p.refunded, currency_code=p.currency),
            status=p.status,
        )

    def _check(self, context: Context, method: str) -> tuple[FakePayment | None, str | None]:
        meta = dict(context.invocation_metadata() or ())
        service = str(meta.get("x-mppo-service", ""))
        if not service:
            raise PermissionDeniedError("internal")
        self.callers.add(service)
        key = meta.get("idempotency-key")
        return None, f"{method}:{key}" if key else None

    def _get(self, payment_id: str) -> FakePayment:
        if payment_id not in self.payments:
            raise NotFoundError(payment_id)
        return self.payments[payment_id]

    @grpc_errors
    async def GetPayment(  # noqa: N802
        self, request: payment_service_pb2.GetPaymentRequest, context: Context
    ) -> payment_service_pb2.GetPaymentResponse:
        self._check(context, "get")
        return payment_service_pb2.GetPaymentResponse(
            payment=self._message(self._get(request.payment_id))
        )

    @grpc_errors
    async def CapturePayment(  # noqa: N802
        self, request: payment_service_pb2.CapturePaymentRequest, context: Context
    ) -> payment_service_pb2.CapturePaymentResponse:
        _, key = self._check(context, "capture")
        if key and key in self.replies:
            return payment_service_pb2.CapturePaymentResponse.FromString(self.replies[key])
        p = self._get(request.payment_id)
        if p.status != S.PAYMENT_STATUS_AUTHORIZED:
            raise FailedPreconditionError(f"payment is {S.PaymentStatus.Name(p.status)}")
        if p.decline_capture:
            p.status = S.PAYMENT_STATUS_FAILED
            self.ledger.append(("capture_declined", p.payment_id, 0))
            raise FailedPreconditionError("capture declined", reason="CAPTURE_DECLINED")
        p.status, p.captured = S.PAYMENT_STATUS_CAPTURED, request.amount.amount_minor or p.amount
        self.ledger.append(("capture", p.payment_id, p.captured))
        reply = payment_service_pb2.CapturePaymentResponse(payment=self._message(p))
        if key:
            self.replies[key] = reply.SerializeToString()
        return reply

    @grpc_errors
    async def VoidPayment(  # noqa: N802
        self, request: payment_service_pb2.VoidPaymentRequest, context: Context
    ) -> payment_service_pb2.VoidPaymentResponse:
        _, key = self._check(context, "void")
        if key and key in self.replies:
            return payment_service_pb2.VoidPaymentResponse.FromString(self.replies[key])
        p = self._get(request.payment_id)
        if p.status != S.PAYMENT_STATUS_AUTHORIZED:
            raise FailedPreconditionError(f"payment is {S.PaymentStatus.Name(p.status)}")
        p.status = S.PAYMENT_STATUS_VOIDED
        self.ledger.append(("void", p.payment_id, p.amount))
        reply = payment_service_pb2.VoidPaymentResponse(payment=self._message(p))
        if key:
            self.replies[key] = reply.SerializeToString()
        return reply

    @grpc_errors
    async def RefundPayment(  # noqa: N802
        self, request: payment_service_pb2.RefundPaymentRequest, context: Context
    ) -> payment_service_pb2.RefundPaymentResponse:
        _, key = self._check(context, "refund")
        if key and key in self.replies:
            return payment_service_pb2.RefundPaymentResponse.FromString(self.replies[key])
        p = self._get(request.payment_id)
        if p.status != S.PAYMENT_STATUS_CAPTURED:
            raise FailedPreconditionError(f"payment is {S.PaymentStatus.Name(p.status)}")
        p.refunded, p.status = p.captured, S.PAYMENT_STATUS_REFUNDED
        self.ledger.append(("refund", p.payment_id, p.refunded))
        reply = payment_service_pb2.RefundPaymentResponse(payment=self._message(p))
        if key:
            self.replies[key] = reply.SerializeToString()
        return reply


async def start_fake_payments(addr: str) -> tuple[grpc.aio.Server, FakePaymentService]:
    """Serve a FakePaymentService at `addr` in the current event loop."""
    server = grpc.aio.server()
    fake = FakePaymentService()  # type: ignore[abstract]
    payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(fake, server)
    server.add_insecure_port(addr)
    await server.start()
    return server, fake
