"""The saga's payment port over the shared payment client (mppo.clients.payment).

`PaymentClient(addr, "order")` makes the calls (identity, trace, idempotency keys, status →
domain error). This adapter only says what an answer means to the saga: a domain error that
:func:`mppo.platform.rpc_status.is_retryable` rejects is a refusal (declined, wrong state,
unknown payment), any other is "unavailable, try again later".
"""

from __future__ import annotations

from collections.abc import Awaitable

from mppo.clients.payment import PaymentClient
from mppo.payment.v1 import payment_pb2
from mppo.platform.errors import DomainError
from mppo.platform.rpc_status import is_retryable
from order_svc.service_layer.ports import (
    PaymentRefusedError,
    PaymentState,
    PaymentUnavailableError,
)

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


async def _state(call: Awaitable[payment_pb2.Payment]) -> PaymentState:
    try:
        payment = await call
    except DomainError as exc:
        detail = f"{exc.reason}: {exc}"
        if is_retryable(exc):
            raise PaymentUnavailableError(detail) from exc
        raise PaymentRefusedError(detail) from exc
    return state_of(payment)


class PaymentServiceGateway:
    """The payment service, as the saga sees it (implements ports.PaymentGateway)."""

    def __init__(self, client: PaymentClient) -> None:
        self._client = client

    async def capture(
        self, payment_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        """CapturePayment for exactly the share's amount."""
        return await _state(
            self._client.capture(payment_id, amount_minor, currency, idempotency_key)
        )

    async def void(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        """VoidPayment."""
        return await _state(self._client.void(payment_id, reason, idempotency_key))

    async def refund(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        """RefundPayment of everything not yet refunded."""
        return await _state(self._client.refund(payment_id, reason, idempotency_key))

    async def get(self, payment_id: str) -> PaymentState:
        """GetPayment."""
        return await _state(self._client.get(payment_id))
