"""Stripe through the official ``stripe`` SDK, for both real Stripe and the sandbox provider.

One ``StripeClient`` instance per adapter (no global SDK state), the asynchronous aiohttp
transport, and the API base URL pointing at Stripe or at the sandbox. Payments are Checkout
Sessions whose PaymentIntent captures manually; every mutating call sends a Stripe
``Idempotency-Key``. Webhooks are verified with ``stripe.WebhookSignature.verify_header``
(HMAC-SHA256 over ``t.body``, refusing timestamps older than the 300 s tolerance) plus our own
check that ``t`` is not more than the tolerance in the future, which the SDK does not make;
the body is then parsed defensively (:mod:`payment_svc.adapters.providers.payload`).

The checkout we record is the Checkout Session (``cs_…``), next to its PaymentIntent (``pi_…``)
when the session already has one (the sandbox creates it at once, real Stripe only when the
payer confirms). ``checkout_ids`` re-reads the session to learn its PaymentIntent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import stripe

from mppo.platform.backoff import RetryPolicy, retry_async, retryable_http_status
from payment_svc.adapters.providers import payload
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

SIGNATURE_HEADER = "stripe-signature"
TOLERANCE_SECONDS = 300

_EVENT_STATUS: Mapping[str, ProviderStatus] = {
    "payment_intent.amount_capturable_updated": ProviderStatus.AUTHORIZED,
    "payment_intent.succeeded": ProviderStatus.CAPTURED,
    "payment_intent.canceled": ProviderStatus.VOIDED,
    "payment_intent.payment_failed": ProviderStatus.FAILED,
    "checkout.session.expired": ProviderStatus.EXPIRED,
}
_RETRYABLE = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


def _timestamp(value: Any) -> datetime | None:
    """A Unix time as a datetime; None when absent or not representable."""
    try:
        return datetime.fromtimestamp(int(value), UTC) if value else None
    except (OverflowError, OSError, ValueError, TypeError):
        return None


def _get(obj: Any, *path: str) -> Any:
    """``obj[a][b]…`` for dicts and StripeObjects, None when any step is missing."""
    for key in path:
        if obj is None:
            return None
        try:
            obj = obj[key]
        except (KeyError, TypeError, AttributeError):
            return None
    return obj


def _provider_error(exc: stripe.StripeError) -> ProviderError:
    retryable = isinstance(exc, _RETRYABLE) or retryable_http_status(exc.http_status or 0)
    if isinstance(exc, stripe.IdempotencyError):
        retryable = False
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    return ProviderError(message, retryable=retryable, code=str(exc.code or type(exc).__name__))


def intent_state(intent: Any) -> ProviderPaymentState:
    """A PaymentIntent (``latest_charge`` expanded or not) in our vocabulary."""
    status = str(intent["status"])
    charge = _get(intent, "latest_charge")
    charge = charge if isinstance(charge, Mapping) else None
    captured = int(intent.get("amount_received") or 0)
    refunded = int(_get(charge, "amount_refunded") or 0)
    error = _get(intent, "last_payment_error")
    reason = str(_get(error, "code") or _get(error, "message") or "")
    ours: ProviderStatus
    if status == "requires_capture":
        ours = ProviderStatus.AUTHORIZED
    elif status == "succeeded":
        if refunded and refunded >= captured:
            ours = ProviderStatus.REFUNDED
        elif refunded:
            ours = ProviderStatus.PARTIALLY_REFUNDED
        else:
            ours = ProviderStatus.CAPTURED
    elif status == "canceled":
        ours = ProviderStatus.VOIDED
    elif status == "requires_payment_method" and error:
        ours = ProviderStatus.FAILED
    else:
        ours = ProviderStatus.REQUIRES_ACTION
    authorized = int(intent.get("amount_capturable") or 0) or (
        int(intent["amount"]) if ours is not ProviderStatus.REQUIRES_ACTION else 0
    )
    return ProviderPaymentState(
        provider_payment_id=str(intent["id"]),
        status=ours,
        amount_authorized_minor=authorized if ours is not ProviderStatus.FAILED else 0,
        amount_captured_minor=captured,
        amount_refunded_minor=refunded,
        failure_reason=reason,
        authorization_expires_at=_timestamp(
            _get(charge, "payment_method_details", "card", "capture_before")
        ),
    )


class StripeProvider:
    """Stripe's API (or the sandbox's copy of it) behind the PaymentProvider interface."""

    can_authorize = True

    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        webhook_secret: str,
        api_base: str | None = None,
        success_url: str = "",
        timeout: float = 10.0,
        tolerance: int = TOLERANCE_SECONDS,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self._retry = retry or RetryPolicy()
        self._webhook_secret = webhook_secret
        self._success_url = success_url
        self._tolerance = tolerance
        base: Any = {"api": api_base.rstrip("/")} if api_base else {}
        self._http = stripe.AIOHTTPClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base,
            http_client=self._http,
            max_network_retries=0,  # our retry loop resends with the same idempotency key
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        """A Checkout Session whose PaymentIntent captures manually."""
        metadata = {
            "payment_id": request.payment_id,
            "group_id": request.group_id,
            "member_id": request.member_id,
            "attempt": str(request.attempt),
        }
        success = request.return_url or self._success_url
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": request.payment_id,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency_code.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": request.description or "Group order share"},
                    },
                }
            ],
            "payment_intent_data": {
                "capture_method": "manual",
                "metadata": metadata,
                "description": request.description or "Group order share",
            },
            "metadata": metadata,
            "success_url": success,
            "cancel_url": success,
        }
        session: Any = await self._call(
            "create checkout",
            lambda: self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": request.idempotency_key},
            ),
        )
        intent = session.get("payment_intent")
        provider_id = str(_get(intent, "id") or intent or session["id"])
        return CheckoutResult(
            provider_payment_id=provider_id,
            payment_link=str(session["url"]),
            checkout_id=str(session["id"]),
        )

    async def _call(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """``op`` with bounded exponential backoff on retryable errors (network, 408, 425, 429,
        5xx); the request inside carries the same idempotency key on every attempt."""

        async def attempt(_: int) -> Any:
            try:
                result = await op()
            except stripe.StripeError as exc:
                raise _provider_error(exc) from exc
            # plain dicts from here on (StripeObject is not a Mapping in SDK 16)
            return result.to_dict() if isinstance(result, stripe.StripeObject) else result

        return await retry_async(
            attempt,
            self._retry,
            is_retryable=lambda exc: isinstance(exc, ProviderError) and exc.retryable,
            what=f"{self.name} {what}",
        )

    async def _session(self, session_id: str) -> Any:
        return await self._call(
            "retrieve checkout",
            lambda: self._client.v1.checkout.sessions.retrieve_async(session_id),
        )

    async def _intent_id(self, provider_payment_id: str) -> str:
        """PaymentIntent ids pass through; a session id resolves to its intent (real Stripe
        creates the intent only when the payer confirms)."""
        if not provider_payment_id.startswith("cs_"):
            return provider_payment_id
        intent = (await self._session(provider_payment_id)).get("payment_intent")
        if not intent:
            raise ProviderError("checkout has no payment yet", retryable=False, code="no_intent")
        return str(_get(intent, "id") or intent)

    async def capture(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        """Capture ``amount_minor`` of the hold."""
        intent_id = await self._intent_id(provider_payment_id)
        intent = await self._call(
            "capture",
            lambda: self._client.v1.payment_intents.capture_async(
                intent_id,
                {"amount_to_capture": amount_minor, "expand": ["latest_charge"]},
                {"idempotency_key": idempotency_key},
            ),
        )
        return intent_state(intent)

    async def void(self, provider_payment_id: str, idempotency_key: str) -> ProviderPaymentState:
        """Cancel the PaymentIntent (releases a hold, or closes an unpaid checkout)."""
        intent_id = await self._intent_id(provider_payment_id)
        intent = await self._call(
            "cancel",
            lambda: self._client.v1.payment_intents.cancel_async(
                intent_id, {"expand": ["latest_charge"]}, {"idempotency_key": idempotency_key}
            ),
        )
        return intent_state(intent)

    async def refund(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        """Refund ``amount_minor`` of the captured money, then re-read the payment."""
        intent_id = await self._intent_id(provider_payment_id)
        await self._call(
            "refund",
            lambda: self._client.v1.refunds.create_async(
                {"payment_intent": intent_id, "amount": amount_minor},
                {"idempotency_key": idempotency_key},
            ),
        )
        return await self.fetch(intent_id)

    async def fetch(self, provider_payment_id: str) -> ProviderPaymentState:
        """The PaymentIntent now (or the checkout session, before the payer confirmed)."""
        if provider_payment_id.startswith("cs_"):
            session = await self._session(provider_payment_id)
            intent_ref = session.get("payment_intent")
            if not intent_ref:
                expired = session.get("status") == "expired"
                return ProviderPaymentState(
                    provider_payment_id=provider_payment_id,
                    status=ProviderStatus.EXPIRED if expired else ProviderStatus.REQUIRES_ACTION,
                )
            provider_payment_id = str(_get(intent_ref, "id") or intent_ref)
        intent_id = provider_payment_id
        intent = await self._call(
            "retrieve",
            lambda: self._client.v1.payment_intents.retrieve_async(
                intent_id, {"expand": ["latest_charge"]}
            ),
        )
        return intent_state(intent)

    async def checkout_ids(self, checkout_id: str) -> frozenset[str]:
        """The session and its PaymentIntent, as Stripe says now (a PaymentIntent id we recorded
        as the checkout stands for itself)."""
        ids = {checkout_id}
        if checkout_id.startswith("cs_"):
            intent = (await self._session(checkout_id)).get("payment_intent")
            if intent:
                ids.add(str(_get(intent, "id") or intent))
        return frozenset(ids)

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderPaymentState:
        """Expire the Checkout Session while it is open (its PaymentIntent is cancelled with
        it, and its page takes no payment); Stripe refuses to expire a session the payer
        completed first, which is then reported as it stands. A PaymentIntent id (no session
        recorded) is cancelled while it still waits for a payment method."""
        if checkout_id.startswith("cs_"):
            if (await self._session(checkout_id)).get("status") == "open":
                try:
                    await self._call(
                        "expire checkout",
                        lambda: self._client.v1.checkout.sessions.expire_async(
                            checkout_id, None, {"idempotency_key": idempotency_key}
                        ),
                    )
                except ProviderError as exc:
                    if exc.retryable:
                        raise
                    # no longer open: completed or expired meanwhile (the re-read tells)
            return await self.fetch(checkout_id)
        state = await self.fetch(checkout_id)
        if state.status is ProviderStatus.REQUIRES_ACTION:
            return await self.void(checkout_id, idempotency_key)
        return state

    async def verify_webhook(self, request: WebhookRequest) -> None:
        """Check ``Stripe-Signature``: HMAC-SHA256 of ``t.body`` with our secret, ``t`` within
        the tolerance of now in both directions."""
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise WebhookVerificationError("missing Stripe-Signature header")
        try:
            stripe.WebhookSignature.verify_header(
                request.body, header, self._webhook_secret, tolerance=self._tolerance
            )
        except stripe.SignatureVerificationError as exc:
            raise WebhookVerificationError(f"bad Stripe signature: {exc}") from exc
        except ValueError as exc:  # a body that is not UTF-8 cannot have been signed
            raise WebhookVerificationError(f"unverifiable Stripe webhook: {exc}") from exc
        if self._tolerance and signed_at(header) > time.time() + self._tolerance:
            raise WebhookVerificationError("Stripe-Signature timestamp is in the future")

    def parse_event(self, request: WebhookRequest) -> ProviderEvent:
        """Which PaymentIntent (and Checkout Session) the event names and the state it
        reports; WebhookVerificationError for a body of the wrong shape."""
        event = payload.load_object(request.body, "stripe event")
        event_id = payload.ident(event, "id", "event", required=True)
        event_type = payload.ident(event, "type", "event", required=True)
        data = payload.obj(event, "data", "event", required=True)
        obj = payload.obj(data, "object", "event.data", required=True)
        where = "event.data.object"
        kind = payload.ident(obj, "object", where)
        metadata = payload.obj(obj, "metadata", where)
        reference = payload.claim(metadata, "payment_id", f"{where}.metadata") or payload.claim(
            obj, "client_reference_id", where
        )
        status: ProviderStatus | None = _EVENT_STATUS.get(event_type)
        other_ids: tuple[str, ...] = ()
        amount = 0
        reason = ""
        if kind == "checkout.session":
            session_id = payload.ident(obj, "id", where)
            intent_id = payload.reference(obj, "payment_intent", where)
            provider_id = intent_id or session_id
            other_ids = (session_id,) if intent_id and session_id else ()
            amount = payload.integer(obj, "amount_total", where)
            if event_type == "checkout.session.completed":
                paid = payload.ident(obj, "payment_status", where) == "paid"
                status = ProviderStatus.CAPTURED if paid else ProviderStatus.AUTHORIZED
        elif kind == "payment_intent":
            provider_id = payload.ident(obj, "id", where)
            if status is ProviderStatus.AUTHORIZED:
                amount = payload.integer(obj, "amount_capturable", where) or payload.integer(
                    obj, "amount", where
                )
            elif status is ProviderStatus.CAPTURED:
                amount = payload.integer(obj, "amount_received", where)
            error = payload.obj(obj, "last_payment_error", where)
            reason = payload.ident(error, "code", f"{where}.last_payment_error") or payload.text(
                error, "message", f"{where}.last_payment_error"
            )
        elif kind == "charge":
            provider_id = payload.reference(obj, "payment_intent", where)
            if event_type == "charge.refunded":
                amount = payload.integer(obj, "amount_refunded", where)
                full = amount >= payload.integer(obj, "amount_captured", where)
                status = ProviderStatus.REFUNDED if full else ProviderStatus.PARTIALLY_REFUNDED
        else:
            provider_id = payload.ident(obj, "id", where)
            status = None
        if status is not None and not provider_id:
            raise payload.malformed(f"stripe {event_type} names no payment")
        return ProviderEvent(
            event_id=event_id,
            event_type=event_type,
            provider_payment_id=provider_id,
            status=status,
            amount_minor=amount,
            failure_reason=reason[:500],
            created_at=_timestamp(payload.integer(event, "created", "event")),
            raw=event,
            merchant_reference=reference,
            other_ids=other_ids,
        )


def signed_at(header: str) -> int:
    """The ``t=`` of a ``Stripe-Signature`` header the SDK has verified (the first one, as
    the SDK reads it)."""
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t" and len(parts) > 1:
            return int(parts[1])
    raise WebhookVerificationError("Stripe-Signature has no timestamp")
