"""PayPal Orders v2 with intent AUTHORIZE, over plain HTTP (aiohttp; there is no PayPal SDK).

Design:
- Our `provider_payment_id` is the PayPal order id: it exists at checkout and names the
  approve page. The authorization and capture ids hang off the order
  (`purchase_units[0].payments`); `fetch`, `capture`, `void` and `refund` read the order and
  act on the authorization or capture it holds, so one id serves every call.
- PayPal holds no money until the merchant authorizes an approved order. `fetch` therefore
  authorizes an order it finds APPROVED (idempotently, `PayPal-Request-Id` derived from the
  order id) and reports AUTHORIZED; the CHECKOUT.ORDER.APPROVED webhook carries no state of its
  own (status None) and should be followed by `fetch`.
- Amounts go out as decimal strings in the currency's ISO 4217 exponent ("10.50", JPY "1050");
  PayPal takes no decimals for HUF and TWD, so those must be whole units.
- Every mutating call carries `PayPal-Request-Id` (our idempotency key), identical on retries.
  Timeouts, connection errors and transient statuses (`retryable_http_status`: 408, 425, 429,
  5xx) are retried with bounded exponential backoff; an expired access token (401) is
  refreshed and the call retried; other 4xx are final.
- Webhooks are verified by PayPal's verify-webhook-signature call with the `PAYPAL-*` headers
  and our webhook id; the raw body is passed through byte for byte as `webhook_event`, then
  parsed defensively (:mod:`payment_svc.adapters.providers.payload`).
- The checkout we record is the order; `checkout_ids` re-reads it for the authorization and
  capture ids hanging off it, so an id first seen in a webhook (a refund names only its
  capture) is accepted only if the order lists it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp

from mppo.platform.backoff import RetryPolicy, retry_async, retryable_http_status
from mppo.platform.errors import InvalidArgumentError
from mppo.platform.money import from_decimal_string, to_decimal_string
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

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api-m.paypal.com"
SANDBOX_API_BASE = "https://api-m.sandbox.paypal.com"
#: the headers PayPal signs a webhook delivery with (lower-cased, as WebhookRequest holds them)
WEBHOOK_HEADERS = {
    "transmission_id": "paypal-transmission-id",
    "transmission_time": "paypal-transmission-time",
    "transmission_sig": "paypal-transmission-sig",
    "cert_url": "paypal-cert-url",
    "auth_algo": "paypal-auth-algo",
}
#: currencies PayPal accepts only in whole units although ISO 4217 gives them two decimals
_WHOLE_UNITS_ONLY = frozenset({"HUF", "TWD"})
_TOKEN_MARGIN_S = 60.0

Json = dict[str, Any]

_CAPTURED = ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED")
_AUTHORIZATION_STATUS = {
    "CREATED": ProviderStatus.AUTHORIZED,
    "PARTIALLY_CAPTURED": ProviderStatus.AUTHORIZED,
    "CAPTURED": ProviderStatus.AUTHORIZED,  # its capture is still pending
    "PENDING": ProviderStatus.REQUIRES_ACTION,
    "VOIDED": ProviderStatus.VOIDED,
    "DENIED": ProviderStatus.FAILED,
    "EXPIRED": ProviderStatus.EXPIRED,
}
_EVENT_STATUS = {
    "PAYMENT.AUTHORIZATION.CREATED": ProviderStatus.AUTHORIZED,
    "PAYMENT.AUTHORIZATION.VOIDED": ProviderStatus.VOIDED,
    "PAYMENT.CAPTURE.COMPLETED": ProviderStatus.CAPTURED,
    "PAYMENT.CAPTURE.DENIED": ProviderStatus.FAILED,
    # a refund resource does not say whether the capture is now fully refunded: fetch tells
    "PAYMENT.CAPTURE.REFUNDED": ProviderStatus.PARTIALLY_REFUNDED,
}


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def paypal_value(amount_minor: int, currency_code: str) -> str:
    """Minor units as the decimal string PayPal wants for `currency_code`."""
    try:
        if currency_code in _WHOLE_UNITS_ONLY:
            if amount_minor % 100:
                raise ProviderError(
                    f"PayPal takes whole {currency_code} only", retryable=False, code="amount"
                )
            return str(amount_minor // 100)
        return to_decimal_string(amount_minor, currency_code)
    except InvalidArgumentError as exc:
        raise ProviderError(str(exc), retryable=False, code="amount") from exc


def _money(amount_minor: int, currency_code: str) -> Json:
    return {"currency_code": currency_code, "value": paypal_value(amount_minor, currency_code)}


def _minor(money: Any) -> int:
    if not isinstance(money, dict):
        return 0
    try:
        return from_decimal_string(str(money.get("value", "0")), str(money.get("currency_code")))
    except InvalidArgumentError:
        return 0


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _link(resource: Mapping[str, Any], *rels: str) -> str:
    for link in resource.get("links") or []:
        if isinstance(link, dict) and link.get("rel") in rels:
            return str(link.get("href", ""))
    return ""


def _payments(order: Mapping[str, Any]) -> Json:
    units = order.get("purchase_units") or [{}]
    payments = units[0].get("payments") if isinstance(units[0], dict) else None
    return payments if isinstance(payments, dict) else {}


def _error_code(status: int, body: Any) -> str:
    if isinstance(body, dict):
        details = body.get("details")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            return str(details[0].get("issue") or body.get("name") or status)
        return str(body.get("name") or body.get("error") or status)
    return f"http_{status}"


def order_state(order: Mapping[str, Any]) -> ProviderPaymentState:
    """Our view of a PayPal order (with its authorization, captures and refunds)."""
    order_id = str(order.get("id", ""))
    payments = _payments(order)
    authorizations = [a for a in payments.get("authorizations") or [] if isinstance(a, dict)]
    captures = [c for c in payments.get("captures") or [] if isinstance(c, dict)]
    refunds = [r for r in payments.get("refunds") or [] if isinstance(r, dict)]
    if not authorizations:
        status = ProviderStatus.VOIDED if order.get("status") == "VOIDED" else None
        return ProviderPaymentState(order_id, status or ProviderStatus.REQUIRES_ACTION)
    authorization = authorizations[-1]
    authorized = _minor(authorization.get("amount"))
    expires = _time(authorization.get("expiration_time"))
    captured = sum(_minor(c.get("amount")) for c in captures if c.get("status") in _CAPTURED)
    refunded = sum(_minor(r.get("amount")) for r in refunds if r.get("status") == "COMPLETED")
    if captured:
        if not refunded:
            status = ProviderStatus.CAPTURED
        elif refunded >= captured:
            status = ProviderStatus.REFUNDED
        else:
            status = ProviderStatus.PARTIALLY_REFUNDED
        return ProviderPaymentState(order_id, status, authorized, captured, refunded, "", expires)
    declined = [c for c in captures if c.get("status") in ("DECLINED", "FAILED")]
    if declined:
        details = declined[-1].get("status_details") or {}
        reason = str(details.get("reason") or "capture declined")
        return ProviderPaymentState(order_id, ProviderStatus.FAILED, authorized, 0, 0, reason)
    status = _AUTHORIZATION_STATUS.get(str(authorization.get("status")), ProviderStatus.FAILED)
    return ProviderPaymentState(order_id, status, authorized, 0, 0, "", expires)


class PayPalProvider:
    """`PaymentProvider` for PayPal Orders v2, intent AUTHORIZE (see the module docstring)."""

    name: str = "paypal"
    can_authorize: bool = True

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        webhook_id: str,
        api_base: str = DEFAULT_API_BASE,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        brand_name: str = "MPPO",
    ) -> None:
        if not (client_id and client_secret and webhook_id):
            raise ValueError("PayPal needs a client id, a client secret and a webhook id")
        self._basic_auth = aiohttp.encode_basic_auth(client_id, client_secret)
        self._webhook_id = webhook_id
        self._base = api_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry or RetryPolicy()
        self._brand = brand_name
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None  # (access token, monotonic expiry)
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the HTTP session (the adapter opens it on first use)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- HTTP plumbing ------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _send(
        self, method: str, path: str, headers: Mapping[str, str], data: bytes | None, what: str
    ) -> tuple[int, Any]:
        try:
            async with self._http().request(
                method, self._base + path, headers=dict(headers), data=data
            ) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(f"paypal {what}: {exc!r}", retryable=True, code="network") from exc
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw[:200].decode("utf-8", "replace")}
        return status, body

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token[1]:
                return self._token[0]

            async def op(_: int) -> Json:
                headers = {
                    "Authorization": self._basic_auth,
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                }
                data = b"grant_type=client_credentials"
                status, body = await self._send("POST", "/v1/oauth2/token", headers, data, "token")
                if status != 200 or not isinstance(body, dict) or "access_token" not in body:
                    retryable = retryable_http_status(status)
                    code = _error_code(status, body)
                    raise ProviderError(
                        f"paypal token: HTTP {status} {code}", retryable=retryable, code=code
                    )
                return body

            body = await retry_async(
                op, self._retry, is_retryable=_is_retryable, what="paypal token"
            )
            lifetime = float(body.get("expires_in") or 0)
            expiry = time.monotonic() + max(0.0, lifetime - _TOKEN_MARGIN_S)
            self._token = (str(body["access_token"]), expiry)
            return self._token[0]

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Json | bytes | None = None,
        request_id: str | None = None,
        what: str,
    ) -> Json:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()

        async def op(_: int) -> Json:
            headers = {
                "Authorization": f"Bearer {await self._access_token()}",
                "Accept": "application/json",
                "Prefer": "return=representation",
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            if request_id:
                headers["PayPal-Request-Id"] = request_id
            status, answer = await self._send(method, path, headers, data, what)
            if 200 <= status < 300:
                return answer if isinstance(answer, dict) else {}
            code = _error_code(status, answer)
            if status == 401:  # the cached token expired or was revoked: get a new one
                self._token = None
            retryable = status == 401 or retryable_http_status(status)
            raise ProviderError(
                f"paypal {what}: HTTP {status} {code}", retryable=retryable, code=code
            )

        result: Json = await retry_async(
            op, self._retry, is_retryable=_is_retryable, what=f"paypal {what}"
        )
        return result

    async def _order(self, order_id: str) -> Json:
        return await self._call("GET", f"/v2/checkout/orders/{order_id}", what="get order")

    async def _authorized_order(self, order_id: str) -> Json:
        """The order, authorized first if the payer has approved it."""
        order = await self._order(order_id)
        if order.get("status") != "APPROVED":
            return order
        try:
            return await self._call(
                "POST",
                f"/v2/checkout/orders/{order_id}/authorize",
                body={},
                request_id=f"authorize-{order_id}",
                what="authorize order",
            )
        except ProviderError as exc:
            if exc.code != "ORDER_ALREADY_AUTHORIZED":
                raise
            return await self._order(order_id)

    # ---- money flows --------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        body: Json = {
            "intent": "AUTHORIZE",
            "purchase_units": [
                {
                    "reference_id": request.payment_id[:256],
                    "custom_id": request.payment_id[:127],
                    "description": request.description[:127],
                    "amount": _money(request.amount_minor, request.currency_code),
                }
            ],
            "payment_source": {
                "paypal": {
                    "experience_context": {
                        "brand_name": self._brand,
                        "user_action": "PAY_NOW",
                        "shipping_preference": "NO_SHIPPING",
                        "return_url": request.return_url,
                        "cancel_url": request.return_url,
                    }
                }
            },
        }
        order = await self._call(
            "POST",
            "/v2/checkout/orders",
            body=body,
            request_id=request.idempotency_key,
            what="create order",
        )
        approve = _link(order, "payer-action", "approve")
        if not order.get("id") or not approve:
            raise ProviderError("paypal create order: no id or approve link", retryable=False)
        logger.info("paypal order %s for payment %s", order["id"], request.payment_id)
        return CheckoutResult(
            provider_payment_id=str(order["id"]), payment_link=approve, checkout_id=str(order["id"])
        )

    async def capture(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        order = await self._authorized_order(provider_payment_id)
        state = order_state(order)
        if state.status in (
            ProviderStatus.CAPTURED,
            ProviderStatus.PARTIALLY_REFUNDED,
            ProviderStatus.REFUNDED,
        ):
            return state
        if state.status is not ProviderStatus.AUTHORIZED:
            raise ProviderError(
                f"paypal order {provider_payment_id} is {state.status.value}, not authorized",
                retryable=False,
                code="not_authorized",
            )
        authorization = _payments(order)["authorizations"][-1]
        currency = str(authorization["amount"]["currency_code"])
        await self._call(
            "POST",
            f"/v2/payments/authorizations/{authorization['id']}/capture",
            body={"amount": _money(amount_minor, currency), "final_capture": True},
            request_id=idempotency_key,
            what="capture authorization",
        )
        return order_state(await self._order(provider_payment_id))

    async def void(self, provider_payment_id: str, idempotency_key: str) -> ProviderPaymentState:
        order = await self._order(provider_payment_id)
        state = order_state(order)
        if state.status is ProviderStatus.REQUIRES_ACTION and not _payments(order):
            # never authorized: nothing is held, the unapproved order simply lapses
            return ProviderPaymentState(
                provider_payment_id, ProviderStatus.VOIDED, failure_reason="never authorized"
            )
        if state.status in (ProviderStatus.VOIDED, ProviderStatus.EXPIRED, ProviderStatus.FAILED):
            return state
        if state.status is not ProviderStatus.AUTHORIZED:
            raise ProviderError(
                f"paypal order {provider_payment_id} is {state.status.value}; refund it instead",
                retryable=False,
                code="already_captured",
            )
        authorization = _payments(order)["authorizations"][-1]
        await self._call(
            "POST",
            f"/v2/payments/authorizations/{authorization['id']}/void",
            request_id=idempotency_key,
            what="void authorization",
        )
        return order_state(await self._order(provider_payment_id))

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderPaymentState:
        """PayPal cannot cancel an order, but holds nothing until we authorize an approved one:
        an order with no authorization is reported VOIDED (the payment service records the
        checkout closed and never authorizes it; an authorization that still races in is
        voided). An order authorized first is reported as it stands. Read only: the order is
        not authorized here."""
        order = await self._order(checkout_id)
        state = order_state(order)
        if state.status is ProviderStatus.REQUIRES_ACTION and not _payments(order):
            return ProviderPaymentState(
                checkout_id, ProviderStatus.VOIDED, failure_reason="checkout closed unpaid"
            )
        return state

    async def refund(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        order = await self._order(provider_payment_id)
        captures = [
            c
            for c in _payments(order).get("captures") or []
            if isinstance(c, dict) and c.get("status") in ("COMPLETED", "PARTIALLY_REFUNDED")
        ]
        if not captures:
            raise ProviderError(
                f"paypal order {provider_payment_id} has no capture to refund",
                retryable=False,
                code="not_captured",
            )
        capture = captures[-1]
        currency = str(capture["amount"]["currency_code"])
        await self._call(
            "POST",
            f"/v2/payments/captures/{capture['id']}/refund",
            body={"amount": _money(amount_minor, currency)},
            request_id=idempotency_key,
            what="refund capture",
        )
        return order_state(await self._order(provider_payment_id))

    async def fetch(self, provider_payment_id: str) -> ProviderPaymentState:
        return order_state(await self._authorized_order(provider_payment_id))

    async def checkout_ids(self, checkout_id: str) -> frozenset[str]:
        """The order and the authorizations and captures PayPal lists on it now."""
        order = await self._order(checkout_id)
        ids = {checkout_id}
        payments = _payments(order)
        for kind in ("authorizations", "captures"):
            for entry in payments.get(kind) or []:
                if isinstance(entry, dict) and entry.get("id"):
                    ids.add(str(entry["id"]))
        return frozenset(ids)

    # ---- webhooks -----------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> None:
        fields: dict[str, str] = {}
        for field_name, header in WEBHOOK_HEADERS.items():
            value = request.headers.get(header, "").strip()
            if not value:
                raise WebhookVerificationError(f"missing {header} header")
            fields[field_name] = value
        try:
            payload.load_object(request.body, "paypal event")
        except WebhookVerificationError as exc:  # nothing PayPal could have signed
            raise WebhookVerificationError(f"unverifiable paypal webhook: {exc}") from exc
        fields["webhook_id"] = self._webhook_id
        # the event goes back to PayPal exactly as it arrived, not re-serialized
        head = json.dumps(fields).encode()
        body = head[:-1] + b', "webhook_event": ' + request.body + b"}"
        try:
            answer = await self._call(
                "POST",
                "/v1/notifications/verify-webhook-signature",
                body=body,
                what="verify webhook signature",
            )
        except ProviderError as exc:
            if exc.retryable:
                raise  # PayPal could not be asked: reject for now, PayPal redelivers
            raise WebhookVerificationError(f"paypal refused to verify: {exc}") from exc
        if answer.get("verification_status") != "SUCCESS":
            raise WebhookVerificationError(
                f"paypal verification status {answer.get('verification_status')!r}"
            )

    def parse_event(self, request: WebhookRequest) -> ProviderEvent:
        """The order the event names and the state it reports; WebhookVerificationError for a
        body of the wrong shape."""
        body = payload.load_object(request.body, "paypal event")
        event_id = payload.ident(body, "id", "event", required=True)
        event_type = payload.ident(body, "event_type", "event", required=True)
        resource = payload.obj(body, "resource", "event")
        status = _EVENT_STATUS.get(event_type)
        provider_id = _event_order_id(event_type, resource)
        if status is not None and not provider_id:
            raise payload.malformed(f"paypal {event_type} names no order")
        reason = ""
        if status is ProviderStatus.FAILED:
            details = payload.obj(resource, "status_details", "resource")
            reason = (
                payload.text(details, "reason", "resource.status_details")
                or payload.text(resource, "status", "resource")
                or "denied"
            )
        units = payload.items(resource, "purchase_units", "resource")
        first = units[0] if units and isinstance(units[0], dict) else {}
        custom_id = payload.claim(resource, "custom_id", "resource") or payload.claim(
            first, "custom_id", "resource.purchase_units[0]"
        )
        return ProviderEvent(
            merchant_reference=custom_id,
            event_id=event_id,
            event_type=event_type,
            provider_payment_id=provider_id,
            status=status,
            amount_minor=_event_amount(resource),
            failure_reason=reason[:500],
            created_at=_time(body.get("create_time")),
            raw=body,
        )


def _event_amount(resource: Mapping[str, Any]) -> int:
    """A webhook resource's ``amount`` in minor units (0 when absent)."""
    amount = payload.obj(resource, "amount", "resource")
    if not amount:
        return 0
    value = payload.ident(amount, "value", "resource.amount", required=True)
    currency = payload.ident(amount, "currency_code", "resource.amount", required=True)
    try:
        minor = from_decimal_string(value, currency)
    except InvalidArgumentError as exc:
        raise payload.malformed(f"resource.amount: {exc}") from exc
    if minor > payload.MAX_INT:
        raise payload.malformed("resource.amount is out of range")
    return minor


def _event_order_id(event_type: str, resource: Mapping[str, Any]) -> str:
    """The order a webhook resource belongs to (a refund names only its capture)."""
    if event_type.startswith("CHECKOUT.ORDER."):
        return payload.ident(resource, "id", "resource")
    supplementary = payload.obj(resource, "supplementary_data", "resource")
    related = payload.obj(supplementary, "related_ids", "resource.supplementary_data")
    order_id = payload.ident(related, "order_id", "resource.supplementary_data.related_ids")
    if order_id:
        return order_id
    for link in payload.items(resource, "links", "resource"):
        if not isinstance(link, dict):
            raise payload.malformed("resource.links[] must be objects")
        if payload.ident(link, "rel", "resource.links[]") == "up":
            href = payload.text(link, "href", "resource.links[]")
            up = href.rstrip("/").rsplit("/", 1)[-1]
            return payload.ident({"up": up}, "up", "resource.links[].href")
    return ""
