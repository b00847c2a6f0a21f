"""The one client of mppo.payment.v1.PaymentService, shared by the group and order services.

Every mutating call carries an idempotency key derived from what it is about, so a retried
call never creates a second intent, capture, void or refund. Failures arrive as domain errors:
``FailedPreconditionError`` / ``NotFoundError`` / ``InvalidArgumentError`` mean the payment
service refused (do not retry), ``UnavailableError`` means try again later
(:func:`mppo.platform.rpc_status.is_retryable`).
"""

from __future__ import annotations

from mppo.clients.channel import ServiceChannel
from mppo.common.v1 import money_pb2
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.idempotency import METADATA_KEY

Payment = payment_pb2.Payment


def intent_key(group_id: str, member_id: str, attempt: int) -> str:
    """The idempotency key of one member's payment attempt."""
    return f"group:{group_id}:member:{member_id}:attempt:{attempt}"


class PaymentClient:
    """Commands and queries to the payment service, as `caller` (our service's name)."""

    def __init__(self, addr: str, caller: str, *, timeout: float = 10.0) -> None:
        self._peer = ServiceChannel(addr, caller, timeout=timeout)

    def _stub(self) -> payment_service_pb2_grpc.PaymentServiceAsyncStub:
        return payment_service_pb2_grpc.PaymentServiceStub(self._peer.channel)

    def _md(self, key: str | None) -> tuple[tuple[str, str], ...]:
        return self._peer.metadata(*(((METADATA_KEY, key),) if key else ()))

    async def create_intent(
        self,
        *,
        group_id: str,
        member_id: str,
        attempt: int,
        amount_minor: int,
        currency_code: str,
        description: str,
        payer_user_id: str,
        provider: str = "",
    ) -> Payment:
        """CreatePaymentIntent, idempotent per (group, member, attempt); `provider` by name
        ("sandbox", "stripe", "razorpay", "paypal"; "": the payment service's default)."""
        request = payment_service_pb2.CreatePaymentIntentRequest(
            group_id=group_id,
            member_id=member_id,
            attempt=attempt,
            amount=money_pb2.Money(amount_minor=amount_minor, currency_code=currency_code),
            description=description,
            payer_user_id=payer_user_id,
            provider=(
                payment_pb2.Provider.Value(f"PROVIDER_{provider.upper()}")
                if provider
                else payment_pb2.PROVIDER_UNSPECIFIED
            ),
        )
        md = self._md(intent_key(group_id, member_id, attempt))
        reply = await self._peer.call(
            "CreatePaymentIntent",
            lambda: self._stub().CreatePaymentIntent(
                request, metadata=md, timeout=self._peer.timeout
            ),
        )
        return reply.payment

    async def capture(
        self, payment_id: str, amount_minor: int, currency_code: str, idempotency_key: str
    ) -> Payment:
        """CapturePayment for exactly `amount_minor`."""
        request = payment_service_pb2.CapturePaymentRequest(
            payment_id=payment_id,
            amount=money_pb2.Money(amount_minor=amount_minor, currency_code=currency_code),
        )
        md = self._md(idempotency_key)
        reply = await self._peer.call(
            "CapturePayment",
            lambda: self._stub().CapturePayment(request, metadata=md, timeout=self._peer.timeout),
        )
        return reply.payment

    async def void(self, payment_id: str, reason: str, idempotency_key: str) -> Payment:
        """VoidPayment: release a hold."""
        request = payment_service_pb2.VoidPaymentRequest(payment_id=payment_id, reason=reason)
        md = self._md(idempotency_key)
        reply = await self._peer.call(
            "VoidPayment",
            lambda: self._stub().VoidPayment(request, metadata=md, timeout=self._peer.timeout),
        )
        return reply.payment

    async def refund(self, payment_id: str, reason: str, idempotency_key: str) -> Payment:
        """RefundPayment of everything captured and not yet refunded."""
        request = payment_service_pb2.RefundPaymentRequest(payment_id=payment_id, reason=reason)
        md = self._md(idempotency_key)
        reply = await self._peer.call(
            "RefundPayment",
            lambda: self._stub().RefundPayment(request, metadata=md, timeout=self._peer.timeout),
        )
        return reply.payment

    async def release(self, payment_id: str, captured: bool, reason: str) -> Payment:
        """Give back money we must not keep: void a hold, or refund a capture."""
        key = f"release:{payment_id}"
        if captured:
            return await self.refund(payment_id, reason, key)
        return await self.void(payment_id, reason, key)

    async def close_checkout(self, payment_id: str, reason: str) -> Payment:
        """CloseCheckout: the payment's hosted page takes no more money (a payment not paid
        yet comes back VOIDED; one paid first comes back as it stands)."""
        request = payment_service_pb2.CloseCheckoutRequest(payment_id=payment_id, reason=reason)
        md = self._md(None)
        reply = await self._peer.call(
            "CloseCheckout",
            lambda: self._stub().CloseCheckout(request, metadata=md, timeout=self._peer.timeout),
        )
        return reply.payment

    async def get(self, payment_id: str) -> Payment:
        """GetPayment."""
        request = payment_service_pb2.GetPaymentRequest(payment_id=payment_id)
        md = self._md(None)
        reply = await self._peer.call(
            "GetPayment",
            lambda: self._stub().GetPayment(request, metadata=md, timeout=self._peer.timeout),
        )
        return reply.payment

    async def close(self) -> None:
        """Close the channel."""
        await self._peer.close()
