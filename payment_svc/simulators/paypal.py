"""A small local PayPal for tests and `mppo dev up`: OAuth2 client credentials, Orders v2
(intent AUTHORIZE), authorizations, captures, refunds and verify-webhook-signature, with
PayPal's documented payload shapes.

It runs as an aiohttp server on a free port. Access tokens expire after `token_lifetime_s`.
`PayPal-Request-Id` works as PayPal documents it: a repeated id on the same call returns the
first answer and creates nothing (`requests` records every call's headers). The payer approves
an order through the hosted page's form (`POST /_fake/approve/{order_id}`). Every state change
records a webhook event in `webhooks`, signed with the PAYPAL-* transmission headers; the real
PayPal signs with a certificate (SHA256withRSA), this fake signs with `signing_secret` (HMAC over
`transmission_id|transmission_time|webhook_id|crc32(event)`), and its verify endpoint checks
exactly that, so a tampered body, another webhook id or a forged signature answers FAILURE.
`fail_next(n, mode)` makes the next n API calls answer 500 or 429, hang without acting
(`timeout`) or act and then hang (`lost`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from mppo.platform.money import from_decimal_string, to_decimal_string
from payment_svc.simulators.server import SimulatorServer

Json = dict[str, Any]
_ID = string.ascii_uppercase + string.digits


def _pid(length: int = 17) -> str:
    return "".join(secrets.choice(_ID) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, name: str, issue: str, description: str = "") -> web.Response:
    body = {
        "name": name,
        "message": description or issue,
        "debug_id": secrets.token_hex(6),
        "details": [{"issue": issue, "description": description or issue}],
    }
    return web.json_response(body, status=status)


def canonical(event: Json) -> bytes:
    """The bytes the fake signs: the event as sorted, compact JSON."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class RecordedRequest:
    """One API call as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class SignedWebhook:
    """A webhook delivery: lower-cased PAYPAL-* headers and the raw body."""

    event_type: str
    headers: dict[str, str]
    body: bytes
    delivered: list[int] = field(default_factory=list)


class PayPalSimulator(SimulatorServer):
    """Local PayPal REST API; `await start()` returns the base URL."""

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        webhook_id: str = "WH-FAKE-0001",
        signing_secret: str = "fake-signing-secret",
        token_lifetime_s: int = 32400,
        hang_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.webhook_id = webhook_id
        self.signing_secret = signing_secret
        self.token_lifetime_s = token_lifetime_s
        self.hang_s = hang_s
        self.orders: dict[str, Json] = {}
        self.authorizations: dict[str, tuple[str, Json]] = {}
        self.captures: dict[str, tuple[str, Json]] = {}
        self.refunds: dict[str, tuple[str, Json]] = {}
        self.tokens: dict[str, datetime] = {}
        self.token_requests = 0
        self.webhooks: list[SignedWebhook] = []
        self.verify_calls: list[Json] = []
        self.deny_next_authorization = False
        self.decline_next_capture = False
        self._answers: dict[tuple[str, str, str], tuple[int, Any]] = {}

    # ---- lifecycle and test controls ----------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/oauth2/token", self._token)
        app.router.add_post("/v2/checkout/orders", self._create_order)
        app.router.add_get("/v2/checkout/orders/{id}", self._get_order)
        app.router.add_post("/v2/checkout/orders/{id}/authorize", self._authorize)
        app.router.add_post("/v2/payments/authorizations/{id}/capture", self._capture)
        app.router.add_post("/v2/payments/authorizations/{id}/void", self._void)
        app.router.add_post("/v2/payments/captures/{id}/refund", self._refund)
        app.router.add_post("/v1/notifications/verify-webhook-signature", self._verify)
        app.router.add_get("/checkoutnow", self._hosted_page)
        app.router.add_post("/_fake/approve/{id}", self._approve_form)

    # ---- plumbing: auth, faults, PayPal-Request-Id --------------------------------------

    async def _api_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(("/v1/", "/v2/")) or request.path == "/v1/oauth2/token":
            response: web.StreamResponse = await handler(request)
            return response
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body)
        )
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        expiry = self.tokens.get(token)
        if expiry is None or expiry <= datetime.now(UTC):
            return web.json_response(
                {
                    "error": "invalid_token",
                    "error_description": "Token signature verification failed",
                },
                status=401,
            )
        fault = self._take_fault(request)
        if fault == "500":
            return _error(500, "INTERNAL_SERVER_ERROR", "INTERNAL_SERVICE_ERROR")
        if fault == "429":
            return _error(429, "RATE_LIMIT_REACHED", "RATE_LIMIT_REACHED")
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return _error(503, "SERVICE_UNAVAILABLE", "SERVICE_UNAVAILABLE")
        request_id = request.headers.get("PayPal-Request-Id")
        key = (request.method, request.path, request_id or "")
        if request_id and key in self._answers:
            status, answer = self._answers[key]
        else:
            response = await handler(request)
            assert isinstance(response, web.Response)
            status = response.status
            answer = json.loads(response.body) if response.body else None  # type: ignore[arg-type]
            if request_id and status < 500:
                self._answers[key] = (status, answer)
        if fault == "lost":
            await asyncio.sleep(self.hang_s)
        if answer is None:
            return web.Response(status=status)
        return web.json_response(answer, status=status)

    @staticmethod
    async def _json(request: web.Request) -> Json:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        return body if isinstance(body, dict) else {}

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        expected = aiohttp.encode_basic_auth(self.client_id, self.client_secret)
        form = await request.post()
        if request.headers.get("Authorization") != expected:
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status=401,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = "A21AA" + secrets.token_urlsafe(24)
        self.tokens[token] = datetime.now(UTC) + timedelta(seconds=self.token_lifetime_s)
        return web.json_response(
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-FAKE",
                "expires_in": self.token_lifetime_s,
                "nonce": secrets.token_hex(8),
            }
        )

    def expire_tokens(self) -> None:
        """Every issued access token stops working (the adapter must fetch a new one)."""
        self.tokens.clear()

    # ---- orders -------------------------------------------------------------------------

    def _links(self, order_id: str) -> list[Json]:
        base = f"{self.base_url}/v2/checkout/orders/{order_id}"
        return [
            {"href": base, "rel": "self", "method": "GET"},
            {
                "href": f"{self.base_url}/checkoutnow?token={order_id}",
                "rel": "payer-action",
                "method": "GET",
            },
            {"href": f"{base}/authorize", "rel": "authorize", "method": "POST"},
        ]

    async def _create_order(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        units = body.get("purchase_units")
        if body.get("intent") not in ("AUTHORIZE", "CAPTURE") or not isinstance(units, list):
            return _error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER")
        amount = units[0].get("amount") if units and isinstance(units[0], dict) else None
        try:
            assert isinstance(amount, dict)
            from_decimal_string(str(amount["value"]), str(amount["currency_code"]))
        except Exception:
            return _error(422, "UNPROCESSABLE_ENTITY", "DECIMAL_PRECISION")
        order_id = _pid()
        order: Json = {
            "id": order_id,
            "intent": body["intent"],
            "status": "PAYER_ACTION_REQUIRED" if "payment_source" in body else "CREATED",
            "payment_source": body.get("payment_source", {}),
            "purchase_units": [dict(units[0], payee={"merchant_id": "FAKEMERCHANT1"})],
            "create_time": _now(),
            "links": self._links(order_id),
        }
        self.orders[order_id] = order
        return web.json_response(order, status=201)

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        return web.json_response(order)

    async def _hosted_page(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.query.get("token", ""))
        if order is None:
            return web.Response(status=404, text="no such order")
        amount = order["purchase_units"][0]["amount"]
        action = f"/_fake/approve/{order['id']}"
        page = (
            f"<html><body><p>{amount['value']} {amount['currency_code']}</p>"
            f'<form method="post" action="{action}"><button name="outcome" value="approve">'
            f"Pay</button></form></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def _approve_form(self, request: web.Request) -> web.Response:
        try:
            order = self.approve(request.match_info["id"])
        except KeyError:
            return web.Response(status=404, text="no such order")
        except ValueError as exc:
            return web.Response(status=409, text=str(exc))
        return self._form_answer(request, order, "Payment approved with PayPal.")

    def approve(self, order_id: str) -> Json:
        """The payer approves the order on the hosted page."""
        order = self.orders[order_id]
        if order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            raise ValueError(f"order is {order['status']}")
        order["status"] = "APPROVED"
        order["payer"] = {
            "payer_id": _pid(13),
            "email_address": "payer@example.com",
            "name": {"given_name": "Test", "surname": "Payer"},
        }
        self._emit("CHECKOUT.ORDER.APPROVED", "checkout-order", order)
        return order

    async def _authorize(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        if order["status"] == "COMPLETED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_AUTHORIZED")
        if order["status"] != "APPROVED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED")
        unit = order["purchase_units"][0]
        denied = self.deny_next_authorization
        self.deny_next_authorization = False
        auth_id = _pid()
        authorization: Json = {
            "id": auth_id,
            "status": "DENIED" if denied else "CREATED",
            "amount": dict(unit["amount"]),
            "custom_id": unit.get("custom_id", ""),
            "seller_protection": {"status": "ELIGIBLE"},
            "expiration_time": (datetime.now(UTC) + timedelta(days=29)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {"href": f"{self.base_url}/v2/payments/authorizations/{auth_id}", "rel": "self"},
                {"href": f"{self.base_url}/v2/checkout/orders/{order['id']}", "rel": "up"},
            ],
        }
        unit.setdefault("payments", {})["authorizations"] = [authorization]
        order["status"] = "COMPLETED"
        self.authorizations[auth_id] = (order["id"], authorization)
        event = "PAYMENT.AUTHORIZATION.DENIED" if denied else "PAYMENT.AUTHORIZATION.CREATED"
        self._emit(event, "authorization", self._related(authorization, order["id"]))
        return web.json_response(order, status=201)

    @staticmethod
    def _related(resource: Json, order_id: str, authorization_id: str | None = None) -> Json:
        related: Json = {"order_id": order_id}
        if authorization_id:
            related["authorization_id"] = authorization_id
        return dict(resource, supplementary_data={"related_ids": related})

    # ---- authorizations, captures, refunds ----------------------------------------------

    async def _capture(self, request: web.Request) -> web.Response:
        found = self.authorizations.get(request.match_info["id"])
        if found is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        order_id, authorization = found
        if authorization["status"] == "CAPTURED":
            return _error(422, "UNPROCESSABLE_ENTITY", "AUTHORIZATION_ALREADY_CAPTURED")
        if authorization["status"] not in ("CREATED", "PARTIALLY_CAPTURED"):
            return _error(422, "UNPROCESSABLE_ENTITY", "CANNOT_BE_CAPTURED")
        body = await self._json(request)
        amount = body.get("amount") or authorization["amount"]
        currency = authorization["amount"]["currency_code"]
        if amount.get("currency_code") != currency:
            return _error(422, "UNPROCESSABLE_ENTITY", "CURRENCY_MISMATCH")
        if from_decimal_string(amount["value"], currency) > from_decimal_string(
            authorization["amount"]["value"], currency
        ):
            return _error(422, "UNPROCESSABLE_ENTITY", "MAX_CAPTURE_AMOUNT_EXCEEDED")
        declined = self.decline_next_capture
        self.decline_next_capture = False
        capture_id = _pid()
        capture: Json = {
            "id": capture_id,
            "status": "DECLINED" if declined else "COMPLETED",
            "amount": dict(amount),
            "final_capture": bool(body.get("final_capture", True)),
            "custom_id": authorization.get("custom_id", ""),
            "seller_protection": {"status": "ELIGIBLE"},
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {"href": f"{self.base_url}/v2/payments/captures/{capture_id}", "rel": "self"},
                {
                    "href": f"{self.base_url}/v2/payments/captures/{capture_id}/refund",
                    "rel": "refund",
                },
                {
                    "href": f"{self.base_url}/v2/payments/authorizations/{authorization['id']}",
                    "rel": "up",
                },
            ],
        }
        if declined:
            capture["status_details"] = {"reason": "DECLINED_BY_RISK_FRAUD_FILTERS"}
        else:
            authorization["status"] = "CAPTURED"
        authorization["update_time"] = _now()
        order = self.orders[order_id]
        order["purchase_units"][0]["payments"].setdefault("captures", []).append(capture)
        self.captures[capture_id] = (order_id, capture)
        event = "PAYMENT.CAPTURE.DENIED" if declined else "PAYMENT.CAPTURE.COMPLETED"
        self._emit(event, "capture", self._related(capture, order_id, authorization["id"]))
        return web.json_response(capture, status=201)

    async def _void(self, request: web.Request) -> web.Response:
        found = self.authorizations.get(request.match_info["id"])
        if found is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        order_id, authorization = found
        if authorization["status"] == "VOIDED":
            return _error(422, "UNPROCESSABLE_ENTITY", "AUTHORIZATION_ALREADY_VOIDED")
        if authorization["status"] != "CREATED":
            return _error(422, "UNPROCESSABLE_ENTITY", "PREVIOUSLY_CAPTURED")
        authorization.update(status="VOIDED", update_time=_now())
        self._emit(
            "PAYMENT.AUTHORIZATION.VOIDED", "authorization", self._related(authorization, order_id)
        )
        if "return=representation" in request.headers.get("Prefer", ""):
            return web.json_response(authorization)
        return web.Response(status=204)

    async def _refund(self, request: web.Request) -> web.Response:
        found = self.captures.get(request.match_info["id"])
        if found is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        order_id, capture = found
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            return _error(422, "UNPROCESSABLE_ENTITY", "CAPTURE_FULLY_REFUNDED")
        currency = capture["amount"]["currency_code"]
        captured = from_decimal_string(capture["amount"]["value"], currency)
        payments = self.orders[order_id]["purchase_units"][0]["payments"]
        earlier = [
            from_decimal_string(r["amount"]["value"], currency)
            for r in payments.get("refunds", [])
            if r["_capture_id"] == capture["id"]
        ]
        body = await self._json(request)
        amount = body.get("amount") or {
            "currency_code": currency,
            "value": to_decimal_string(captured - sum(earlier), currency),
        }
        value = from_decimal_string(amount["value"], currency)
        if value <= 0 or value + sum(earlier) > captured:
            return _error(422, "UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED")
        total = value + sum(earlier)
        capture["status"] = "REFUNDED" if total == captured else "PARTIALLY_REFUNDED"
        refund_id = _pid()
        refund: Json = {
            "id": refund_id,
            "status": "COMPLETED",
            "amount": dict(amount),
            "custom_id": capture.get("custom_id", ""),
            "seller_payable_breakdown": {
                "total_refunded_amount": {
                    "currency_code": currency,
                    "value": to_decimal_string(total, currency),
                }
            },
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {"href": f"{self.base_url}/v2/payments/refunds/{refund_id}", "rel": "self"},
                {"href": f"{self.base_url}/v2/payments/captures/{capture['id']}", "rel": "up"},
            ],
        }
        stored = dict(refund, _capture_id=capture["id"])
        payments.setdefault("refunds", []).append(stored)
        self.refunds[refund_id] = (order_id, stored)
        self._emit("PAYMENT.CAPTURE.REFUNDED", "refund", refund)
        return web.json_response(refund, status=201)

    # ---- webhooks -----------------------------------------------------------------------

    def _signature(self, transmission_id: str, when: str, webhook_id: str, event: Json) -> str:
        crc = binascii.crc32(canonical(event))
        message = f"{transmission_id}|{when}|{webhook_id}|{crc}".encode()
        digest = hmac.new(self.signing_secret.encode(), message, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def signed(self, event: Json, *, webhook_id: str | None = None) -> SignedWebhook:
        """Sign `event` the fake's way and return the delivery PayPal would make."""
        transmission_id = str(uuid.uuid4())
        when = _now()
        signature = self._signature(transmission_id, when, webhook_id or self.webhook_id, event)
        headers = {
            "content-type": "application/json",
            "paypal-transmission-id": transmission_id,
            "paypal-transmission-time": when,
            "paypal-transmission-sig": signature,
            "paypal-cert-url": f"{self.base_url}/v1/notifications/certs/CERT-FAKE-0001",
            "paypal-auth-algo": "SHA256withRSA",
        }
        return SignedWebhook(str(event["event_type"]), headers, json.dumps(event).encode())

    def _emit(self, event_type: str, resource_type: str, resource: Json) -> None:
        clean = {k: v for k, v in resource.items() if not k.startswith("_")}
        event: Json = {
            "id": "WH-" + _pid(17) + "-" + _pid(17),
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": f"{event_type} (fake)",
            "resource": json.loads(json.dumps(clean)),
            "links": [],
        }
        webhook = self.signed(event)
        self.webhooks.append(webhook)
        self._send(webhook)

    def last_webhook(self, event_type: str) -> SignedWebhook:
        return next(w for w in reversed(self.webhooks) if w.event_type == event_type)

    async def _verify(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        self.verify_calls.append(body)
        names = (
            "auth_algo",
            "cert_url",
            "transmission_id",
            "transmission_sig",
            "transmission_time",
            "webhook_id",
        )
        missing = [n for n in names if not body.get(n)]
        if missing or not isinstance(body.get("webhook_event"), dict):
            return _error(400, "VALIDATION_ERROR", "MISSING_REQUIRED_PARAMETER", ",".join(missing))
        expected = self._signature(
            body["transmission_id"],
            body["transmission_time"],
            self.webhook_id,
            body["webhook_event"],
        )
        ok = (
            body["webhook_id"] == self.webhook_id
            and body["auth_algo"] == "SHA256withRSA"
            and str(body["cert_url"]).startswith(f"{self.base_url}/v1/notifications/certs/")
            and hmac.compare_digest(expected, str(body["transmission_sig"]))
        )
        return web.json_response({"verification_status": "SUCCESS" if ok else "FAILURE"})
