"""The PaymentService gRPC servicer: thin, proto in, command out, proto back.

Each method turns its request (and the caller named in the metadata) into a command and runs
its handler with a fresh unit of work; errors map to gRPC statuses in the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from mppo.payment.v1 import payment_service_pb2 as pb
from mppo.payment.v1 import payment_service_pb2_grpc
from mppo.platform import money, paging
from mppo.platform.errors import DomainError, FieldViolation, InvalidArgumentError
from mppo.platform.idempotency import METADATA_KEY
from mppo.platform.identity import Caller, caller_from
from payment_svc.service_layer import commands
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.service_layer.messages import PROVIDER_NAME, to_proto
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_TEXT = 500


def _metadata(context: Context) -> dict[str, str]:
    """Invocation metadata as a dict with lower-cased keys (text values only)."""
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


def _caller(context: Context) -> Caller:
    return caller_from(context.invocation_metadata())


def _require(value: str, field: str, violations: list[FieldViolation]) -> None:
    if not value.strip():
        violations.append(FieldViolation(field, "required"))
    elif len(value) > 200:
        violations.append(FieldViolation(field, "at most 200 characters"))


def _validated_intent(
    request: pb.CreatePaymentIntentRequest, caller: Caller, default_provider: str
) -> commands.CreatePaymentIntent:
    violations: list[FieldViolation] = []
    _require(request.group_id, "group_id", violations)
    _require(request.member_id, "member_id", violations)
    if request.attempt < 1:
        violations.append(FieldViolation("attempt", "starts at 1"))
    if request.amount.amount_minor <= 0:
        violations.append(FieldViolation("amount.amount_minor", "must be positive"))
    code = request.amount.currency_code
    try:
        money.exponent(code, "amount.currency_code")
    except DomainError as exc:
        violations.extend(exc.violations)
    if len(request.description) > _MAX_TEXT:
        violations.append(FieldViolation("description", f"at most {_MAX_TEXT} characters"))
    if request.return_url and not request.return_url.startswith(("http://", "https://")):
        violations.append(FieldViolation("return_url", "an http(s) URL"))
    provider = default_provider
    if request.provider:
        name = PROVIDER_NAME.get(request.provider)
        if name is None:
            violations.append(FieldViolation("provider", "unknown provider"))
        else:
            provider = name
    if violations:
        raise InvalidArgumentError("invalid payment intent", violations)
    return commands.CreatePaymentIntent(
        caller=caller,
        group_id=request.group_id,
        member_id=request.member_id,
        attempt=request.attempt,
        amount_minor=request.amount.amount_minor,
        currency_code=code,
        provider=provider,
        description=request.description,
        return_url=request.return_url,
        payer_user_id=request.payer_user_id,
    )


def _payment_id(value: str) -> str:
    if not value.strip():
        raise InvalidArgumentError(
            "payment_id is required", [FieldViolation("payment_id", "required")]
        )
    return value


def _amount(request: pb.CapturePaymentRequest | pb.RefundPaymentRequest) -> int | None:
    if not request.HasField("amount"):
        return None
    return request.amount.amount_minor


class PaymentServiceServicer(payment_service_pb2_grpc.PaymentServiceServicer):
    """Serves mppo.payment.v1.PaymentService."""

    def __init__(self, handlers: PaymentHandlers, uow: Callable[[], PaymentUnitOfWork]) -> None:
        self._handlers = handlers
        self._uow = uow

    async def CreatePaymentIntent(  # noqa: N802
        self, request: pb.CreatePaymentIntentRequest, context: Context
    ) -> pb.CreatePaymentIntentResponse:
        """Create (or replay) the payment of one member attempt (our services only: members
        get their intents through the group service, which owns the shares)."""
        caller = _caller(context)
        cmd = _validated_intent(request, caller, self._handlers.settings.default_provider)
        payment = await self._handlers.create_payment_intent(cmd, self._uow())
        return pb.CreatePaymentIntentResponse(payment=to_proto(payment))

    async def GetPayment(  # noqa: N802
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        """One payment."""
        cmd = commands.GetPayment(_caller(context), _payment_id(request.payment_id))
        payment = await self._handlers.get_payment(cmd, self._uow())
        return pb.GetPaymentResponse(payment=to_proto(payment))

    async def ListPayments(  # noqa: N802
        self, request: pb.ListPaymentsRequest, context: Context
    ) -> pb.ListPaymentsResponse:
        """A group's payments, oldest first."""
        if not request.group_id.strip():
            raise InvalidArgumentError(
                "group_id is required", [FieldViolation("group_id", "required")]
            )
        caller = _caller(context)
        query = paging.query_of(request, caller.label)
        after = paging.decode_token(request.page_token, query, 1)[0] if request.page_token else ""
        size = paging.page_size(request.page_size)
        cmd = commands.ListPayments(caller, request.group_id, size, after)
        found, more = await self._handlers.list_payments(cmd, self._uow())
        return pb.ListPaymentsResponse(
            payments=[to_proto(p) for p in found],
            next_page_token=paging.encode_token(query, more) if more else "",
        )

    async def HandleWebhook(  # noqa: N802
        self, request: pb.HandleWebhookRequest, context: Context
    ) -> pb.HandleWebhookResponse:
        """A provider webhook: HTTP headers arrive as metadata, the raw body as HttpBody."""
        cmd = commands.HandleWebhook(
            provider=request.provider, body=bytes(request.body.data), headers=_metadata(context)
        )
        result = await self._handlers.handle_webhook(cmd, self._uow())
        return pb.HandleWebhookResponse(event_id=result.event_id, duplicate=result.duplicate)

    async def CapturePayment(  # noqa: N802
        self, request: pb.CapturePaymentRequest, context: Context
    ) -> pb.CapturePaymentResponse:
        """Capture an authorized payment."""
        cmd = commands.CapturePayment(
            _caller(context), _payment_id(request.payment_id), _amount(request)
        )
        payment = await self._handlers.capture_payment(cmd, self._uow())
        return pb.CapturePaymentResponse(payment=to_proto(payment))

    async def VoidPayment(  # noqa: N802
        self, request: pb.VoidPaymentRequest, context: Context
    ) -> pb.VoidPaymentResponse:
        """Release a hold."""
        cmd = commands.VoidPayment(
            _caller(context),
            _payment_id(request.payment_id),
            request.reason or "void requested",
        )
        payment = await self._handlers.void_payment(cmd, self._uow())
        return pb.VoidPaymentResponse(payment=to_proto(payment))

    async def CloseCheckout(  # noqa: N802
        self, request: pb.CloseCheckoutRequest, context: Context
    ) -> pb.CloseCheckoutResponse:
        """Close a payment's hosted checkout: it takes no more money."""
        cmd = commands.CloseCheckout(
            _caller(context),
            _payment_id(request.payment_id),
            request.reason[:_MAX_TEXT] or "checkout closed",
        )
        payment = await self._handlers.close_checkout(cmd, self._uow())
        return pb.CloseCheckoutResponse(payment=to_proto(payment))

    async def RefundPayment(  # noqa: N802
        self, request: pb.RefundPaymentRequest, context: Context
    ) -> pb.RefundPaymentResponse:
        """Refund captured money (``idempotency-key`` metadata makes a retry safe)."""
        cmd = commands.RefundPayment(
            _caller(context),
            _payment_id(request.payment_id),
            _amount(request),
            request.reason or "refund requested",
            key=_metadata(context).get(METADATA_KEY, "")[:200],
        )
        payment = await self._handlers.refund_payment(cmd, self._uow())
        return pb.RefundPaymentResponse(payment=to_proto(payment))

    async def SyncPayment(  # noqa: N802
        self, request: pb.SyncPaymentRequest, context: Context
    ) -> pb.SyncPaymentResponse:
        """Re-read a payment from its provider."""
        cmd = commands.SyncPayment(_caller(context), _payment_id(request.payment_id))
        payment, changed = await self._handlers.sync_payment(cmd, self._uow())
        return pb.SyncPaymentResponse(payment=to_proto(payment), changed=changed)
