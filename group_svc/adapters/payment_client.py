"""Client of mppo.payment.v1.PaymentService: the commands the group service sends.

Calls identify the group service (`x-mppo-service: group`), carry the trace, and send a
deterministic idempotency key, so a retried call never creates a second intent or void.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from mppo.common.v1 import money_pb2
from mppo.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.errors import FailedPreconditionError, NotFoundError, UnavailableError
from mppo.platform.idempotency import METADATA_KEY
from mppo.platform.identity import service_metadata
from mppo.platform.telemetry import traced_channel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intent:
    """What the payment service answered for one attempt."""

    payment_id: str
    payment_link: str


def intent_key(group_id: str, member_id: str, attempt: int) -> str:
    """The idempotency key of one member's attempt."""
    return f"group:{group_id}:member:{member_id}:attempt:{attempt}"


class PaymentClient:
    """Thin async wrapper around the PaymentService stub."""

    def __init__(self, addr: str, timeout: float = 10.0) -> None:
        self._channel = traced_channel(addr)
        self._stub = payment_service_pb2_grpc.PaymentServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(None)

    def _metadata(self, key: str) -> tuple[tuple[str, str], ...]:
        return (*service_metadata("group"), (METADATA_KEY, key))

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
    ) -> Intent:
        """CreatePaymentIntent, idempotent per (group, member, attempt)."""
        request = payment_service_pb2.CreatePaymentIntentRequest(
            group_id=group_id,
            member_id=member_id,
            attempt=attempt,
            amount=money_pb2.Money(amount_minor=amount_minor, currency_code=currency_code),
            description=description,
            payer_user_id=payer_user_id,
        )
        try:
            reply = await self._stub.CreatePaymentIntent(
                request,
                metadata=self._metadata(intent_key(group_id, member_id, attempt)),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "CreatePaymentIntent") from exc
        return Intent(reply.payment.payment_id, reply.payment.payment_link)

    async def release(self, payment_id: str, captured: bool, reason: str) -> None:
        """Void a hold (or refund a capture) the group does not keep."""
        try:
            if captured:
                await self._stub.RefundPayment(
                    payment_service_pb2.RefundPaymentRequest(payment_id=payment_id, reason=reason),
                    metadata=self._metadata(f"group-release:{payment_id}"),
                    timeout=self._timeout,
                )
            else:
                await self._stub.VoidPayment(
                    payment_service_pb2.VoidPaymentRequest(payment_id=payment_id, reason=reason),
                    metadata=self._metadata(f"group-release:{payment_id}"),
                    timeout=self._timeout,
                )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "VoidPayment") from exc


def _translate(exc: grpc.aio.AioRpcError, method: str) -> Exception:
    code = exc.code()
    detail = exc.details() or ""
    logger.warning("payment service %s failed: %s %s", method, code.name, detail)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPreconditionError(f"payment service: {detail}", reason="PAYMENT_REFUSED")
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundError(f"payment service: {detail}")
    return UnavailableError(f"payment service unavailable ({code.name}): {detail}")
