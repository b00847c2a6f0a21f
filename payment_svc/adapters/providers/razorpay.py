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
  Bodies are parsed defensively (:mod:`payment_svc.adapters.providers.payload`).
- The checkout we record is the link; `checkout_ids` re-reads it for the payments (`pay_…`)
  made on it, so a payment id first seen in a webhook is accepted only if the link lists it.

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
from payment_svc.adapters.providers import payload as body_of
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
    """``payload[name].entity`` ({} when absent; refused when of the wrong shape)."""
    part = body_of.obj(payload, name, "payload")
    return body_of.obj(part, "entity", f"payload.{name}") if part else {}


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int) and value > 0:
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _our_payment_id(*entities: Mapping[str, Any]) -> str:
    """Our payment id as Razorpay echoes it: the link's `reference_id`, else our notes
    (Razorpay sends empty notes as a list)."""
    for entity in entities:
        found = body_of.claim(entity, "reference_id", "entity")
        if found:
            return found
    for entity in entities:
        notes = entity.get("notes")
        if isinstance(notes, dict):
            found = body_of.claim(notes, "mppo_payment_id", "entity.notes")
            if found:
                return found
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
            provider_payment_id=str(link["id"]),
            payment_link=str(link["short_url"]),
            checkout_id=str(link["id"]),
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
            await self._cancel_link(str(link["id"]), idempotency_key)
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

    async def _cancel_link(self, link_id: str, idempotency_key: str) -> None:
        """Cancel a payment link (a retry first checks whether an earlier attempt did)."""

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

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderPaymentState:
        """Cancel the payment link while nobody has paid on it (Razorpay then refuses payment
        on it); a link paid first is reported as it stands (captured: links capture at once)."""
        link, payment = await self._resolve(checkout_id)
        state = self._state(checkout_id, link, payment)
        if state.status is not ProviderStatus.REQUIRES_ACTION or link is None:
            return state
        try:
            await self._cancel_link(str(link["id"]), idempotency_key)
        except ProviderError as exc:
            if exc.retryable:
                raise
            # no longer cancellable: paid or expired meanwhile (the re-read tells)
        link, payment = await self._resolve(checkout_id)
        return self._state(checkout_id, link, payment)

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

    async def checkout_ids(self, checkout_id: str) -> frozenset[str]:
        """The link and every payment Razorpay lists on it now (a `pay_…` id stands alone)."""
        if checkout_id.startswith("pay_"):
            return frozenset({checkout_id})
        link = await self._fetch_link(checkout_id)
        ids = {checkout_id}
        for entry in link.get("payments") or []:
            if isinstance(entry, dict) and entry.get("payment_id"):
                ids.add(str(entry["payment_id"]))
        return frozenset(ids)

    # ---- webhooks -----------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        signature = request.headers.get(SIGNATURE_HEADER, "").strip()
        if not signature:
            raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
        expected = hmac.new(self._webhook_secret, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise WebhookVerificationError("razorpay signature does not match the body")

    def parse_event(self, request: WebhookRequest) -> ProviderEvent:
        """The link or payment the event names and the state it reports;
        WebhookVerificationError for a body of the wrong shape."""
        body = body_of.load_object(request.body, "razorpay event")
        event_type = body_of.ident(body, "event", "event", required=True)
        payload = body_of.obj(body, "payload", "event")
        event_id = (
            request.headers.get(EVENT_ID_HEADER, "").strip()
            or body_of.ident(body, "id", "event")
            or "sha256:" + hashlib.sha256(request.body).hexdigest()
        )
        if len(event_id) > body_of.MAX_ID or not event_id.isprintable():
            raise body_of.malformed(f"{EVENT_ID_HEADER} is not an id")
        link = _entity(payload, "payment_link")
        payment = _entity(payload, "payment")
        refund = _entity(payload, "refund")
        status, amount = self._event_status(event_type, link, payment, refund)
        link_id = body_of.ident(link, "id", "payload.payment_link.entity")
        payment_id = body_of.ident(payment, "id", "payload.payment.entity")
        refunded_id = body_of.ident(refund, "payment_id", "payload.refund.entity")
        provider_id = link_id or payment_id or refunded_id
        if status is not None and not provider_id:
            raise body_of.malformed(f"razorpay {event_type} names no payment")
        other_ids = tuple(i for i in (payment_id, refunded_id) if i and i != provider_id)
        reason = body_of.text(payment, "error_description", "payload.payment.entity")
        return ProviderEvent(
            merchant_reference=_our_payment_id(link, payment, refund),
            event_id=event_id,
            event_type=event_type,
            provider_payment_id=provider_id,
            status=status,
            amount_minor=amount,
            failure_reason=reason[:500] if status else "",
            created_at=_epoch(body_of.integer(body, "created_at", "event")),
            raw=body,
            other_ids=other_ids,
        )

    @staticmethod
    def _event_status(
        event_type: str, link: Json, payment: Json, refund: Json
    ) -> tuple[ProviderStatus | None, int]:
        where = "payload.payment.entity"
        payment_amount = body_of.integer(payment, "amount", where)
        body_of.integer(payment, "amount_refunded", where)  # _refund_status reads it
        payment_status = body_of.ident(payment, "status", where)
        if event_type == "payment.authorized":
            return ProviderStatus.AUTHORIZED, payment_amount
        if event_type == "payment.captured":
            return ProviderStatus.CAPTURED, payment_amount
        if event_type == "payment.failed":
            return ProviderStatus.FAILED, payment_amount
        if event_type == "payment_link.paid":
            held = payment_status == "authorized"
            status = ProviderStatus.AUTHORIZED if held else ProviderStatus.CAPTURED
            paid = body_of.integer(link, "amount_paid", "payload.payment_link.entity")
            return status, paid or payment_amount
        if event_type == "payment_link.cancelled":
            return ProviderStatus.VOIDED, 0
        if event_type == "payment_link.expired":
            return ProviderStatus.EXPIRED, 0
        if event_type in ("refund.processed", "payment.refunded"):
            refunded = body_of.integer(refund, "amount", "payload.refund.entity") or (
                body_of.integer(payment, "amount_refunded", where)
            )
            return _refund_status(
                payment
            ) if payment else ProviderStatus.PARTIALLY_REFUNDED, refunded
        return None, 0
