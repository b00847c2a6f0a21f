"""Razorpay through the `razorpay` SDK: Payment Links, capture, refund, fetch, and webhooks
signed with `X-Razorpay-Signature`.

Design, as Razorpay documents it:
- The hosted page is a Standard Payment Link (`POST /v1/payment_links`, amount in minor units,
  `reference_id` = our payment id, callback to our return URL). Our `provider_payment_id` is the
  link id (`plink_…`), known at once; the payment (`pay_…`) made on it is found through the
  link's `payments` list. Every method also accepts a `pay_…` id directly.
- `can_authorize` is False: Razorpay's manual-capture settings apply only to payments created
  through the Orders API, so a payment-link payment is captured automatically and the
  compensation is a refund. A payment can still be seen `authorized` (late authorization, or
  an account set to capture manually); `capture` then captures it, and an uncaptured
  authorization is released by Razorpay itself (auto-refund after its capture window).
- Razorpay has no idempotency header for these APIs, so the idempotency key rides in fields
  Razorpay keeps unique: the link's `reference_id` (our payment id) and the refund's
  `receipt`. Before a retried create the adapter looks for what an earlier attempt made.
- Webhooks carry no timestamp: `X-Razorpay-Signature` is the hex HMAC-SHA256 of the raw body
  with the webhook secret, and the event id (`X-Razorpay-Event-Id`) is the de-duplication key.

The SDK is synchronous (requests): each call runs in the default thread executor with a
timeout, and transient failures (timeouts, connection errors, `retryable_http_status`: 408,
425, 429, 5xx) are retried with bounded exponential backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError

from mppo.platform.backoff import RetryPolicy, retry_async, retryable_http_status
from payment_svc.adapters.providers.base import (
    CheckoutRequest,
    CheckoutResult,
    ProviderError,
    ProviderEvent,
    ProviderPaymentState,
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.razorpay.com"
SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
#: Razorpay limits `reference_id` and refund `receipt` to 40 characters
_MAX_REFERENCE = 40

Json = dict[str, Any]
SdkCall = Callable[[dict[str, Any]], Any]

#: which payment on a link tells its story: a captured one over an authorized over a failed
_PAYMENT_RANK = {"refunded": 4, "captured": 4, "authorized": 3, "created": 2, "failed": 1}
_LINK_STATUS = {
    "created": ProviderStatus.REQUIRES_ACTION,
    "partially_paid": ProviderStatus.REQUIRES_ACTION,
    "cancelled": ProviderStatus.VOIDED,
    "expired": ProviderStatus.EXPIRED,
}


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def _entity(payload: Mapping[str, Any], name: str) -> Json:
    part = payload.get(name)
    if isinstance(part, dict) and isinstance(part.get("entity"), dict):
        return dict(part["entity"])
    return {}


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _our_payment_id(*entities: Mapping[str, Any]) -> str:
    """Our payment id as Razorpay echoes it: the link's `reference_id`, else our notes."""
    for entity in entities:
        if entity.get("reference_id"):
            return str(entity["reference_id"])
    for entity in entities:
        notes = entity.get("notes")
        if isinstance(notes, dict) and notes.get("mppo_payment_id"):
            return str(notes["mppo_payment_id"])
    return ""


def _refund_status(payment: Mapping[str, Any]) -> ProviderStatus:
    amount = int(payment.get("amount") or 0)
    refunded = int(payment.get("amount_refunded") or 0)
    if payment.get("status") == "refunded" or (amount > 0 and refunded >= amount):
        return ProviderStatus.REFUNDED
    return ProviderStatus.PARTIALLY_REFUNDED


class RazorpayProvider:
    """`PaymentProvider` for Razorpay Payment Links (see the module docstring)."""

    name: str = "razorpay"
    can_authorize: bool = False

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        webhook_secret: str,
        api_base: str = DEFAULT_API_BASE,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not (key_id and key_secret and webhook_secret):
            raise ValueError("Razorpay needs a key id, a key secret and a webhook secret")
        self._client = razorpay.Client(auth=(key_id, key_secret), base_url=api_base.rstrip("/"))
        self._client.set_app_details({"title": "mppo-payment", "version": "1"})
        self._webhook_secret = webhook_secret.encode()
        self._timeout = timeout
        self._retry = retry or RetryPolicy()

    # ---- SDK plumbing -------------------------------------------------------------------

    async def _sdk(self, what: str, call: SdkCall) -> Json:
        """One SDK call in a worker thread: its JSON object, or ProviderError."""
        statuses: list[int] = []

        def record(response: Any, *args: Any, **kwargs: Any) -> Any:
            statuses.append(int(response.status_code))
            return response

        options: dict[str, Any] = {"timeout": self._timeout, "hooks": {"response": [record]}}
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout * 2 + 1):
                result = await loop.run_in_executor(None, call, options)
        except TimeoutError as exc:
            raise ProviderError(
                f"razorpay {what}: timed out", retryable=True, code="timeout"
            ) from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise ProviderError(f"razorpay {what}: {exc}", retryable=True, code="network") from exc
        except (BadRequestError, GatewayError, ServerError) as exc:
            status = statuses[-1] if statuses else 0
            code = f"http_{status}" if status else type(exc).__name__
            retryable = retryable_http_status(status) or (
                status == 0 and not isinstance(exc, BadRequestError)
            )
            raise ProviderError(f"razorpay {what}: {exc}", retryable=retryable, code=code) from exc
        except requests.RequestException as exc:  # e.g. a non-JSON error page
            status = statuses[-1] if statuses else 0
            raise ProviderError(
                f"razorpay {what}: HTTP {status}: {exc}",
                retryable=status == 0 or retryable_http_status(status),
                code=f"http_{status}",
            ) from exc
        if isinstance(result, str):  # the SDK answers 204 with the string "{}"
            result = json.loads(result)
        if not isinstance(result, dict):
            raise ProviderError(f"razorpay {what}: unexpected answer", retryable=False)
        return result

    async def _with_retries(self, what: str, op: Callable[[int], Any]) -> Json:
        result: Json = await retry_async(op, self._retry, is_retryable=_is_retryable, what=what)
        return result

    async def _fetch_link(self, link_id: str) -> Json:
        async def op(_: int) -> Json:
            return await self._sdk(
                "fetch payment link", lambda o: self._client.payment_link.fetch(link_id, {}, **o)
            )

        return await self._with_retries("razorpay fetch payment link", op)

    async def _fetch_payment(self, payment_id: str) -> Json:
        async def op(_: int) -> Json:
            return await self._sdk(
                "fetch payment", lambda o: self._client.payment.fetch(payment_id, {}, **o)
            )

        return await self._with_retries("razorpay fetch payment", op)

    async def _find_link(self, reference_id: str) -> Json | None:
        found = await self._sdk(
            "find payment link",
            lambda o: self._client.payment_link.all({"reference_id": reference_id}, **o),
        )
        for link in found.get("payment_links") or []:
            if isinstance(link, dict) and link.get("reference_id") == reference_id:
                return link
        return None

    async def _resolve(self, provider_payment_id: str) -> tuple[Json | None, Json | None]:
        """The payment link (None for a `pay_` id) and the payment that decides its state."""
        if provider_payment_id.startswith("pay_"):
            return None, await self._fetch_payment(provider_payment_id)
        link = await self._fetch_link(provider_payment_id)
        attempts = [p for p in link.get("payments") or [] if isinstance(p, dict)]
        if not attempts:
            return link, None
        best = max(attempts, key=lambda p: _PAYMENT_RANK.get(str(p.get("status")), 0))
        return link, await self._fetch_payment(str(best["payment_id"]))

    @staticmethod
    def _state(
        provider_payment_id: str, link: Json | None, payment: Json | None
    ) -> ProviderPaymentState:
        if payment is not None and payment.get("status") != "failed":
            amount = int(payment.get("amount") or 0)
            refunded = int(payment.get("amount_refunded") or 0)
            status = str(payment.get("status"))
            if status == "authorized":
                return ProviderPaymentState(
                    provider_payment_id, ProviderStatus.AUTHORIZED, amount_authorized_minor=amount
                )
            if status in ("captured", "refunded"):
                final = ProviderStatus.CAPTURED if refunded == 0 else _refund_status(payment)
                return ProviderPaymentState(
                    provider_payment_id,
                    final,
                    amount_authorized_minor=amount,
                    amount_captured_minor=amount,
                    amount_refunded_minor=refunded,
                )
        reason = str(payment.get("error_description") or "") if payment else ""
        if link is None:
            failed = payment is not None and payment.get("status") == "failed"
            status_ = ProviderStatus.FAILED if failed else ProviderStatus.REQUIRES_ACTION
            return ProviderPaymentState(provider_payment_id, status_, failure_reason=reason)
        link_status = _LINK_STATUS.get(str(link.get("status")), ProviderStatus.REQUIRES_ACTION)
        return ProviderPaymentState(provider_payment_id, link_status, failure_reason=reason)

    # ---- money flows --------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        reference = request.payment_id[:_MAX_REFERENCE]
        body: Json = {
            "amount": request.amount_minor,
            "currency": request.currency_code,
            "accept_partial": False,
            "reference_id": reference,
            "description": request.description[:2048],
            "callback_url": request.return_url,
            "callback_method": "get",
            "notify": {"sms": False, "email": False},
            "reminder_enable": False,
            "notes": {
                "mppo_payment_id": request.payment_id,
                "mppo_group_id": request.group_id,
                "mppo_member_id": request.member_id,
                "mppo_attempt": str(request.attempt),
            },
        }

        async def op(attempt: int) -> Json:
            if attempt > 0:  # an earlier attempt may have created the link before failing
                existing = await self._find_link(reference)
                if existing is not None:
                    return existing
            try:
                return await self._sdk(
                    "create payment link",
                    lambda o: self._client.payment_link.create(dict(body), **o),
                )
            except ProviderError as exc:
                if exc.retryable:
                    raise
                existing = await self._find_link(reference)  # duplicate reference_id
                if existing is None:
                    raise
                return existing

        link = await self._with_retries("razorpay create payment link", op)
        logger.info("razorpay link %s for payment %s", link.get("id"), request.payment_id)
        return CheckoutResult(
            provider_payment_id=str(link["id"]), payment_link=str(link["short_url"])
        )

    async def capture(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        link, payment = await self._resolve(provider_payment_id)
        if payment is None or payment.get("status") not in ("authorized", "captured", "refunded"):
            raise ProviderError(
                f"razorpay {provider_payment_id}: no authorized payment to capture",
                retryable=False,
                code="not_authorized",
            )
        if payment.get("status") == "authorized":
            payment_id = str(payment["id"])
            currency = str(payment.get("currency") or "INR")

            async def op(attempt: int) -> Json:
                if attempt > 0:
                    current = await self._sdk(
                        "fetch payment", lambda o: self._client.payment.fetch(payment_id, {}, **o)
                    )
                    if current.get("status") != "authorized":
                        return current
                return await self._sdk(
                    "capture",
                    lambda o: self._client.payment.capture(
                        payment_id, amount_minor, {"currency": currency}, **o
                    ),
                )

            await self._with_retries(f"razorpay capture {idempotency_key}", op)
            link, payment = await self._resolve(provider_payment_id)
        return self._state(provider_payment_id, link, payment)

    async def void(self, provider_payment_id: str, idempotency_key: str) -> ProviderPaymentState:
        link, payment = await self._resolve(provider_payment_id)
        state = self._state(provider_payment_id, link, payment)
        if state.status in (ProviderStatus.VOIDED, ProviderStatus.EXPIRED, ProviderStatus.FAILED):
            return state
        if state.status is ProviderStatus.REQUIRES_ACTION and link is not None:
            link_id = str(link["id"])

            async def op(attempt: int) -> Json:
                if attempt > 0:
                    current = await self._sdk(
                        "fetch payment link",
                        lambda o: self._client.payment_link.fetch(link_id, {}, **o),
                    )
                    if current.get("status") != "created":
                        return current
                return await self._sdk(
                    "cancel payment link", lambda o: self._client.payment_link.cancel(link_id, **o)
                )

            await self._with_retries(f"razorpay cancel link {idempotency_key}", op)
            link, payment = await self._resolve(provider_payment_id)
            return self._state(provider_payment_id, link, payment)
        if state.status is ProviderStatus.AUTHORIZED:
            raise ProviderError(
                "razorpay has no void: an uncaptured authorization is refunded by Razorpay "
                "when its capture window ends",
                retryable=False,
                code="void_unsupported",
            )
        raise ProviderError(
            f"razorpay {provider_payment_id} is {state.status.value}; refund it instead",
            retryable=False,
            code="already_captured",
        )

    async def refund(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        link, payment = await self._resolve(provider_payment_id)
        if payment is None or payment.get("status") not in ("captured", "refunded"):
            raise ProviderError(
                f"razorpay {provider_payment_id}: only captured payments can be refunded",
                retryable=False,
                code="not_captured",
            )
        payment_id = str(payment["id"])
        receipt = idempotency_key[:_MAX_REFERENCE]

        async def op(_: int) -> Json:
            earlier = await self._sdk(
                "list refunds",
                lambda o: self._client.payment.fetch_multiple_refund(
                    payment_id, {"count": 100}, **o
                ),
            )
            for item in earlier.get("items") or []:
                if isinstance(item, dict) and item.get("receipt") == receipt:
                    return item
            body = {
                "amount": amount_minor,
                "receipt": receipt,
                "notes": {"mppo_idempotency_key": idempotency_key[:256]},
            }
            return await self._sdk(
                "refund", lambda o: self._client.payment.refund(payment_id, body, **o)
            )

        await self._with_retries(f"razorpay refund {idempotency_key}", op)
        link, payment = await self._resolve(provider_payment_id)
        return self._state(provider_payment_id, link, payment)

    async def fetch(self, provider_payment_id: str) -> ProviderPaymentState:
        link, payment = await self._resolve(provider_payment_id)
        return self._state(provider_payment_id, link, payment)

    # ---- webhooks -----------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        signature = request.headers.get(SIGNATURE_HEADER, "").strip()
        if not signature:
            raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
        expected = hmac.new(self._webhook_secret, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise WebhookVerificationError("razorpay signature does not match the body")

    def parse_event(self, request: WebhookRequest) -> ProviderEvent:
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise WebhookVerificationError("razorpay webhook body is not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("event"), str):
            raise WebhookVerificationError("razorpay webhook names no event")
        payload: Json = body["payload"] if isinstance(body.get("payload"), dict) else {}
        event_id = (
            request.headers.get(EVENT_ID_HEADER, "").strip()
            or str(body.get("id") or "")
            or "sha256:" + hashlib.sha256(request.body).hexdigest()
        )
        event_type: str = body["event"]
        link = _entity(payload, "payment_link")
        payment = _entity(payload, "payment")
        refund = _entity(payload, "refund")
        status, amount = self._event_status(event_type, link, payment, refund)
        provider_id = str(link.get("id") or payment.get("id") or refund.get("payment_id") or "")
        if status is not None and not provider_id:
            raise WebhookVerificationError(f"razorpay {event_type} names no payment")
        return ProviderEvent(
            merchant_reference=_our_payment_id(link, payment, refund),
            event_id=event_id,
            event_type=event_type,
            provider_payment_id=provider_id,
            status=status,
            amount_minor=amount,
            failure_reason=str(payment.get("error_description") or "") if status else "",
            created_at=_epoch(body.get("created_at")),
            raw=body,
        )

    @staticmethod
    def _event_status(
        event_type: str, link: Json, payment: Json, refund: Json
    ) -> tuple[ProviderStatus | None, int]:
        payment_amount = int(payment.get("amount") or 0)
        if event_type == "payment.authorized":
            return ProviderStatus.AUTHORIZED, payment_amount
        if event_type == "payment.captured":
            return ProviderStatus.CAPTURED, payment_amount
        if event_type == "payment.failed":
            return ProviderStatus.FAILED, payment_amount
        if event_type == "payment_link.paid":
            held = payment.get("status") == "authorized"
            status = ProviderStatus.AUTHORIZED if held else ProviderStatus.CAPTURED
            return status, int(link.get("amount_paid") or payment_amount)
        if event_type == "payment_link.cancelled":
            return ProviderStatus.VOIDED, 0
        if event_type == "payment_link.expired":
            return ProviderStatus.EXPIRED, 0
        if event_type in ("refund.processed", "payment.refunded"):
            refunded = int(refund.get("amount") or payment.get("amount_refunded") or 0)
            return _refund_status(
                payment
            ) if payment else ProviderStatus.PARTIALLY_REFUNDED, refunded
        return None, 0
