"""The payment service over gRPC: capture, void, refund and read a payment.

Calls identify the order service (`x-mppo-service: order`), carry the trace
(`traced_channel`) and an `idempotency-key` per operation and share, so a retried capture
after a lost reply returns the first result instead of capturing twice. Status codes map to
"refused" (the payment cannot do this: declined, wrong state, unknown) or "unavailable"
(retry later).
"""

from __future__ import annotations

import grpc

from mppo.common.v1 import money_pb2
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.idempotency import METADATA_KEY
from mppo.platform.identity import service_metadata
from mppo.platform.telemetry import traced_channel
from order_svc.service_layer.ports import (
    PaymentGateway,
    PaymentRefusedError,
    PaymentState,
    PaymentUnavailableError,
)

_REFUSED = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}
_STATUS_PREFIX = "PAYMENT_STATUS_"


def state_of(payment: payment_pb2.Payment) -> PaymentState:
    """Our view of a Payment message."""
    name = payment_pb2.PaymentStatus.Name(payment.status)
    return PaymentState(
        payment_id=payment.payment_id,
        status=name.removeprefix(_STATUS_PREFIX),
        captured_minor=payment.amount_captured.amount_minor,
        refunded_minor=payment.amount_refunded.amount_minor,
    )


class GrpcPaymentGateway(PaymentGateway):
    """mppo.payment.v1.PaymentService at `addr`."""

    def __init__(self, addr: str, *, timeout_seconds: float = 10.0) -> None:
        self._channel = traced_channel(addr)
        self._stub = payment_service_pb2_grpc.PaymentServiceStub(self._channel)
        self._timeout = timeout_seconds

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    def _metadata(self, key: str | None) -> tuple[tuple[str, str], ...]:
        extra = ((METADATA_KEY, key),) if key else ()
        return (*service_metadata("order"), *extra)

    async def capture(
        self, payment_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        """CapturePayment for exactly the share's amount."""
        request = payment_service_pb2.CapturePaymentRequest(
            payment_id=payment_id,
            amount=money_pb2.Money(amount_minor=amount_minor, currency_code=currency),
        )
        try:
            reply = await self._stub.CapturePayment(
                request, metadata=self._metadata(idempotency_key), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return state_of(reply.payment)

    async def void(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        """VoidPayment."""
        request = payment_service_pb2.VoidPaymentRequest(payment_id=payment_id, reason=reason)
        try:
            reply = await self._stub.VoidPayment(
                request, metadata=self._metadata(idempotency_key), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return state_of(reply.payment)

    async def refund(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        """RefundPayment of everything not yet refunded."""
        request = payment_service_pb2.RefundPaymentRequest(payment_id=payment_id, reason=reason)
        try:
            reply = await self._stub.RefundPayment(
                request, metadata=self._metadata(idempotency_key), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return state_of(reply.payment)

    async def get(self, payment_id: str) -> PaymentState:
        """GetPayment."""
        request = payment_service_pb2.GetPaymentRequest(payment_id=payment_id)
        try:
            reply = await self._stub.GetPayment(
                request, metadata=self._metadata(None), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return state_of(reply.payment)


def _translate(exc: grpc.aio.AioRpcError) -> Exception:
    detail = f"{exc.code().name}: {exc.details()}"
    if exc.code() in _REFUSED:
        return PaymentRefusedError(detail)
    return PaymentUnavailableError(detail)
