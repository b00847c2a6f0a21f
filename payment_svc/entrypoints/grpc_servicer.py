"""The PaymentService gRPC servicer: thin, proto in, command out, proto back."""

from __future__ import annotations

from typing import Any

import grpc

from mppo.payment.v1 import payment_service_pb2 as pb
from mppo.payment.v1 import payment_service_pb2_grpc
from mppo.platform.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from mppo.platform.idempotency import METADATA_KEY
from mppo.platform.identity import SERVICE_KEY, USER_ID_KEY, caller_from
from mppo.platform.membership import GroupAccess
from mppo.platform.rpc_status import grpc_errors
from payment_svc.service_layer.messages import PROVIDER_NAME, to_proto
from payment_svc.service_layer.payments import NewIntent, PaymentService

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_TEXT = 500


def _metadata(context: Context) -> dict[str, str]:
    """Invocation metadata as a dict with lower-cased keys (text values only)."""
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


def _actor(context: Context) -> str:
    metadata = _metadata(context)
    if metadata.get(USER_ID_KEY):
        return f"user:{metadata[USER_ID_KEY]}"
    return f"service:{metadata.get(SERVICE_KEY) or 'unknown'}"


def _internal_only(context: Context) -> None:
    """Money-moving RPCs are for our services (order, group), never end users."""
    caller = caller_from(context.invocation_metadata())
    if caller.user_id or not caller.service:
        raise PermissionDeniedError("internal RPC: our services only", reason="INTERNAL_ONLY")


def _require(value: str, field: str, violations: list[FieldViolation]) -> None:
    if not value.strip():
        violations.append(FieldViolation(field, "required"))
    elif len(value) > 200:
        violations.append(FieldViolation(field, "at most 200 characters"))


def _validated_intent(request: pb.CreatePaymentIntentRequest, default_provider: str) -> NewIntent:
    violations: list[FieldViolation] = []
    _require(request.group_id, "group_id", violations)
    _require(request.member_id, "member_id", violations)
    if request.attempt < 1:
        violations.append(FieldViolation("attempt", "starts at 1"))
    if request.amount.amount_minor <= 0:
        violations.append(FieldViolation("amount.amount_minor", "must be positive"))
    code = request.amount.currency_code
    if len(code) != 3 or not code.isalpha() or not code.isupper():
        violations.append(FieldViolation("amount.currency_code", "ISO 4217 code, e.g. USD"))
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
    return NewIntent(
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

    def __init__(self, service: PaymentService, access: GroupAccess) -> None:
        self._service = service
        self._access = access

    @grpc_errors
    async def CreatePaymentIntent(  # noqa: N802
        self, request: pb.CreatePaymentIntentRequest, context: Context
    ) -> pb.CreatePaymentIntentResponse:
        """Create (or replay) the payment of one member attempt (our services only: members
        get their intents through the group service, which owns the shares)."""
        _internal_only(context)  # members get intents through the group service
        intent = _validated_intent(request, self._service.settings.default_provider)
        payment = await self._service.create_intent(intent)
        return pb.CreatePaymentIntentResponse(payment=to_proto(payment))

    @grpc_errors
    async def GetPayment(  # noqa: N802
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        """One payment."""
        caller = caller_from(context.invocation_metadata())
        payment = await self._service.get(_payment_id(request.payment_id))
        view = await self._access.view(caller, payment.group_id)
        if not view.may_see_member(payment.member_id):
            raise NotFoundError("payment not found")
        return pb.GetPaymentResponse(payment=to_proto(payment))

    @grpc_errors
    async def ListPayments(  # noqa: N802
        self, request: pb.ListPaymentsRequest, context: Context
    ) -> pb.ListPaymentsResponse:
        """A group's payments, oldest first."""
        if not request.group_id.strip():
            raise InvalidArgumentError(
                "group_id is required", [FieldViolation("group_id", "required")]
            )
        caller = caller_from(context.invocation_metadata())
        view = await self._access.view(caller, request.group_id)
        found = await self._service.list_group(request.group_id)
        return pb.ListPaymentsResponse(
            payments=[to_proto(p) for p in found if view.may_see_member(p.member_id)]
        )

    @grpc_errors
    async def HandleWebhook(  # noqa: N802
        self, request: pb.HandleWebhookRequest, context: Context
    ) -> pb.HandleWebhookResponse:
        """A provider webhook: HTTP headers arrive as metadata, the raw body as HttpBody."""
        result = await self._service.handle_webhook(
            request.provider, _metadata(context), bytes(request.body.data)
        )
        return pb.HandleWebhookResponse(event_id=result.event_id, duplicate=result.duplicate)

    @grpc_errors
    async def CapturePayment(  # noqa: N802
        self, request: pb.CapturePaymentRequest, context: Context
    ) -> pb.CapturePaymentResponse:
        """Capture an authorized payment."""
        _internal_only(context)
        payment = await self._service.capture(
            _payment_id(request.payment_id), _amount(request), _actor(context)
        )
        return pb.CapturePaymentResponse(payment=to_proto(payment))

    @grpc_errors
    async def VoidPayment(  # noqa: N802
        self, request: pb.VoidPaymentRequest, context: Context
    ) -> pb.VoidPaymentResponse:
        """Release a hold."""
        _internal_only(context)
        payment = await self._service.void(
            _payment_id(request.payment_id), request.reason or "void requested", _actor(context)
        )
        return pb.VoidPaymentResponse(payment=to_proto(payment))

    @grpc_errors
    async def RefundPayment(  # noqa: N802
        self, request: pb.RefundPaymentRequest, context: Context
    ) -> pb.RefundPaymentResponse:
        """Refund captured money (``idempotency-key`` metadata makes a retry safe)."""
        _internal_only(context)
        key = _metadata(context).get(METADATA_KEY, "")[:200]
        payment = await self._service.refund(
            _payment_id(request.payment_id),
            _amount(request),
            request.reason or "refund requested",
            _actor(context),
            key=key,
        )
        return pb.RefundPaymentResponse(payment=to_proto(payment))

    @grpc_errors
    async def SyncPayment(  # noqa: N802
        self, request: pb.SyncPaymentRequest, context: Context
    ) -> pb.SyncPaymentResponse:
        """Re-read a payment from its provider."""
        _internal_only(context)
        payment, changed = await self._service.sync(
            _payment_id(request.payment_id), actor=_actor(context)
        )
        return pb.SyncPaymentResponse(payment=to_proto(payment), changed=changed)
