"""A small local Razorpay for tests and `mppo dev up`: the Payment Links, Payments and Refunds
endpoints our adapter calls, with Razorpay's documented payload shapes and webhook signature scheme.

It runs as an aiohttp server on a free port. State: payment links, payments, refunds. A payer
"pays" through the hosted page's form (`POST /_fake/pay/{link_id}`, outcome `captured`,
`authorized` or `failed`). Every state change records a webhook signed the documented way
(`X-Razorpay-Signature` = hex HMAC-SHA256 of the raw body with the webhook secret, plus
`X-Razorpay-Event-Id`) in `webhooks`, and posts it to `deliver_to` when that is set.
`fail_next(n, mode)` makes the next n API calls answer 500 or 429, hang past the client's
timeout without acting (`timeout`), or act and then hang (`lost`: the answer never arrives).
Razorpay has no idempotency header, so `requests` records every API call's method, path and
JSON body: the idempotency key travels in `reference_id` and refund `receipt`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from payment_svc.simulators.server import SimulatorServer

Json = dict[str, Any]
_ALPHABET = string.ascii_letters + string.digits


def _rid(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(14))


def _error(status: int, description: str, code: str = "BAD_REQUEST_ERROR") -> web.Response:
    body = {"error": {"code": code, "description": description, "source": "business"}}
    return web.json_response(body, status=status)


def sign(body: bytes, secret: str) -> str:
    """Razorpay's webhook signature: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class RecordedRequest:
    """One API call as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Json | None


@dataclass
class SignedWebhook:
    """A webhook as Razorpay would send it: lower-cased headers and the raw body."""

    event: str
    headers: dict[str, str]
    body: bytes
    delivered: list[int] = field(default_factory=list)


class RazorpaySimulator(SimulatorServer):
    """Local Razorpay; `await start()` returns the base URL (`http://127.0.0.1:PORT`)."""

    def __init__(
        self,
        *,
        key_id: str = "rzp_test_fake",
        key_secret: str = "fake_key_secret",
        webhook_secret: str = "fake_webhook_secret",
        hang_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.key_id = key_id
        self.key_secret = key_secret
        self.webhook_secret = webhook_secret
        self.hang_s = hang_s
        self.links: dict[str, Json] = {}
        self.payments: dict[str, Json] = {}
        self.refunds: dict[str, Json] = {}
        self.webhooks: list[SignedWebhook] = []

    # ---- lifecycle and test controls ----------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/payment_links", self._create_link)
        app.router.add_get("/v1/payment_links", self._list_links)
        app.router.add_get("/v1/payment_links/{id}", self._get_link)
        app.router.add_post("/v1/payment_links/{id}/cancel", self._cancel_link)
        app.router.add_get("/v1/payments/{id}", self._get_payment)
        app.router.add_post("/v1/payments/{id}/capture", self._capture)
        app.router.add_post("/v1/payments/{id}/refund", self._refund)
        app.router.add_get("/v1/payments/{id}/refunds", self._list_refunds)
        app.router.add_get("/i/{id}", self._hosted_page)
        app.router.add_post("/_fake/pay/{id}", self._pay_form)

    # ---- plumbing -----------------------------------------------------------------------

    async def _api_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            response: web.StreamResponse = await handler(request)
            return response
        expected = "Basic " + base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "The api key provided is invalid")
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), dict(request.headers), body
            )
        )
        fault = self._take_fault(request)
        if fault == "500":
            return _error(500, "The server encountered an error.", "SERVER_ERROR")
        if fault == "429":
            return _error(429, "Too many requests")
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return _error(504, "Gateway timeout", "SERVER_ERROR")
        response = await handler(request)
        if fault == "lost":
            await asyncio.sleep(self.hang_s)
        return response

    @staticmethod
    async def _json(request: web.Request) -> Json:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        return body if isinstance(body, dict) else {}

    # ---- payment links ------------------------------------------------------------------

    async def _create_link(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        amount, currency = body.get("amount"), body.get("currency", "INR")
        if not isinstance(amount, int) or amount < 100:
            return _error(400, "The amount must be atleast INR 1.00")
        reference = body.get("reference_id")
        if reference and any(link["reference_id"] == reference for link in self.links.values()):
            return _error(400, f"Payment Link with reference id {reference} already exists")
        now = int(time.time())
        link_id = _rid("plink_")
        link: Json = {
            "id": link_id,
            "accept_partial": bool(body.get("accept_partial", False)),
            "amount": amount,
            "amount_paid": 0,
            "callback_method": body.get("callback_method", ""),
            "callback_url": body.get("callback_url", ""),
            "cancelled_at": 0,
            "created_at": now,
            "currency": currency,
            "customer": body.get("customer", {}),
            "description": body.get("description", ""),
            "expire_by": body.get("expire_by", 0),
            "expired_at": 0,
            "first_min_partial_amount": 0,
            "notes": body.get("notes"),
            "notify": body.get("notify", {"email": False, "sms": False}),
            "order_id": "",
            "payments": None,
            "reference_id": reference or "",
            "reminder_enable": bool(body.get("reminder_enable", False)),
            "reminders": [],
            "short_url": f"{self.base_url}/i/{link_id[6:]}",
            "status": "created",
            "updated_at": now,
            "upi_link": False,
            "user_id": "",
        }
        self.links[link_id] = link
        return web.json_response(link)

    async def _list_links(self, request: web.Request) -> web.Response:
        reference = request.query.get("reference_id")
        links = [v for v in self.links.values() if reference in (None, v["reference_id"])]
        return web.json_response({"payment_links": links})

    async def _get_link(self, request: web.Request) -> web.Response:
        link = self.links.get(request.match_info["id"])
        if link is None:
            return _error(400, "The id provided does not exist")
        return web.json_response(link)

    async def _cancel_link(self, request: web.Request) -> web.Response:
        link = self.links.get(request.match_info["id"])
        if link is None:
            return _error(400, "The id provided does not exist")
        if link["status"] != "created":
            return _error(400, f"Payment Link cannot be cancelled in {link['status']} state")
        link.update(status="cancelled", cancelled_at=int(time.time()))
        self._emit("payment_link.cancelled", link=link)
        return web.json_response(link)

    # ---- the payer ----------------------------------------------------------------------

    async def _hosted_page(self, request: web.Request) -> web.Response:
        link = self.links.get("plink_" + request.match_info["id"])
        if link is None:
            return web.Response(status=404, text="no such link")
        action = f"/_fake/pay/{link['id']}"
        page = (
            f"<html><body><h1>{html.escape(str(link['description']))}</h1>"
            f"<p>{link['amount']} {link['currency']} (minor units)</p>"
            f'<form method="post" action="{action}"><input type="hidden" name="outcome" '
            f'value="captured"><button>Pay</button></form>'
            f'<form method="post" action="{action}"><input type="hidden" name="outcome" '
            f'value="failed"><button>Decline</button></form></body></html>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _pay_form(self, request: web.Request) -> web.Response:
        form = await request.post()
        outcome = str(form.get("outcome", "captured"))
        try:
            payment = self.pay(request.match_info["id"], outcome)
        except KeyError:
            return web.Response(status=404, text="no such link")
        except ValueError as exc:
            return web.Response(status=409, text=str(exc))
        said = "Payment failed." if payment.get("status") == "failed" else "Paid with Razorpay."
        return self._form_answer(request, payment, said)

    def pay(self, link_id: str, outcome: str = "captured") -> Json:
        """The payer pays the link: `captured` (auto-capture), `authorized` or `failed`."""
        link = self.links[link_id]
        if link["status"] != "created":
            raise ValueError(f"link is {link['status']}")
        if not link["order_id"]:
            link["order_id"] = _rid("order_")
        now = int(time.time())
        failed = outcome == "failed"
        payment: Json = {
            "id": _rid("pay_"),
            "entity": "payment",
            "amount": link["amount"],
            "currency": link["currency"],
            "status": "failed" if failed else "authorized",
            "order_id": link["order_id"],
            "invoice_id": None,
            "international": False,
            "method": "card",
            "amount_refunded": 0,
            "refund_status": None,
            "captured": False,
            "description": link["description"],
            "card_id": None,
            "bank": None,
            "wallet": None,
            "vpa": None,
            "email": "payer@example.com",
            "contact": "+919900000000",
            "notes": link["notes"] or [],
            "fee": None,
            "tax": None,
            "error_code": "BAD_REQUEST_ERROR" if failed else None,
            "error_description": "Payment failed" if failed else None,
            "error_source": "customer" if failed else None,
            "error_step": "payment_authorization" if failed else None,
            "error_reason": "payment_failed" if failed else None,
            "acquirer_data": {},
            "created_at": now,
        }
        self.payments[payment["id"]] = payment
        link["payments"] = [
            *(link["payments"] or []),
            {
                "amount": payment["amount"],
                "created_at": now,
                "method": "card",
                "payment_id": payment["id"],
                "status": payment["status"],
            },
        ]
        if failed:
            self._emit("payment.failed", payment=payment)
            return payment
        self._emit("payment.authorized", payment=payment)
        if outcome == "captured":
            self._do_capture(payment)
        return payment

    # ---- payments and refunds -----------------------------------------------------------

    def _link_of(self, payment: Json) -> Json | None:
        for link in self.links.values():
            if any(p["payment_id"] == payment["id"] for p in link["payments"] or []):
                return link
        return None

    def _sync_link(self, payment: Json) -> Json | None:
        link = self._link_of(payment)
        if link is not None:
            for entry in link["payments"]:
                if entry["payment_id"] == payment["id"]:
                    entry["status"] = payment["status"]
            link["updated_at"] = int(time.time())
        return link

    def _do_capture(self, payment: Json) -> None:
        payment.update(status="captured", captured=True)
        link = self._sync_link(payment)
        self._emit("payment.captured", payment=payment)
        if link is not None:
            link.update(status="paid", amount_paid=payment["amount"])
            order = {"id": link["order_id"], "entity": "order", "amount": link["amount"]}
            self._emit("payment_link.paid", link=link, payment=payment, order=order)

    async def _get_payment(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return _error(400, "The id provided does not exist")
        return web.json_response(payment)

    async def _capture(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return _error(400, "The id provided does not exist")
        body = await self._json(request)
        if payment["status"] == "captured":
            return _error(400, "This payment has already been captured")
        if payment["status"] != "authorized":
            return _error(400, "Only payments which have been authorized can be captured")
        if body.get("amount") != payment["amount"] or body.get("currency") != payment["currency"]:
            return _error(400, "Capture amount must be equal to the amount authorized")
        self._do_capture(payment)
        return web.json_response(payment)

    async def _refund(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return _error(400, "The id provided does not exist")
        if payment["status"] not in ("captured",):
            return _error(400, "Only captured payments can be refunded")
        body = await self._json(request)
        remaining = payment["amount"] - payment["amount_refunded"]
        amount = body.get("amount", remaining)
        if not isinstance(amount, int) or amount <= 0 or amount > remaining:
            return _error(400, "The refund amount provided is greater than amount captured")
        refund: Json = {
            "id": _rid("rfnd_"),
            "entity": "refund",
            "amount": amount,
            "currency": payment["currency"],
            "payment_id": payment["id"],
            "notes": body.get("notes") or [],
            "receipt": body.get("receipt"),
            "acquirer_data": {"arn": None},
            "created_at": int(time.time()),
            "batch_id": None,
            "status": "processed",
            "speed_processed": "normal",
            "speed_requested": body.get("speed", "normal"),
        }
        self.refunds[refund["id"]] = refund
        payment["amount_refunded"] += amount
        full = payment["amount_refunded"] == payment["amount"]
        payment["refund_status"] = "full" if full else "partial"
        if full:
            payment["status"] = "refunded"
        self._sync_link(payment)
        self._emit("refund.processed", refund=refund, payment=payment)
        return web.json_response(refund)

    async def _list_refunds(self, request: web.Request) -> web.Response:
        items = [r for r in self.refunds.values() if r["payment_id"] == request.match_info["id"]]
        return web.json_response({"entity": "collection", "count": len(items), "items": items})

    # ---- webhooks -----------------------------------------------------------------------

    def signed(self, event: str, secret: str | None = None, **entities: Json) -> SignedWebhook:
        """A webhook for `event` carrying snapshots of `entities` (payment_link=…, payment=…)."""
        payload = {name: {"entity": json.loads(json.dumps(e))} for name, e in entities.items()}
        envelope = {
            "entity": "event",
            "account_id": "acc_FakeAccount0001",
            "event": event,
            "contains": list(entities),
            "payload": payload,
            "created_at": int(time.time()),
        }
        body = json.dumps(envelope).encode()
        headers = {
            "content-type": "application/json",
            "x-razorpay-event-id": _rid("evt_"),
            "x-razorpay-signature": sign(body, secret or self.webhook_secret),
        }
        return SignedWebhook(event, headers, body)

    def _emit(
        self,
        event: str,
        *,
        link: Json | None = None,
        payment: Json | None = None,
        refund: Json | None = None,
        order: Json | None = None,
    ) -> None:
        entities: Json = {}
        if link is not None:
            entities["payment_link"] = link
        if order is not None:
            entities["order"] = order
        if payment is not None:
            entities["payment"] = payment
        if refund is not None:
            entities["refund"] = refund
        webhook = self.signed(event, **entities)
        self.webhooks.append(webhook)
        self._send(webhook)

    def last_webhook(self, event: str) -> SignedWebhook:
        return next(w for w in reversed(self.webhooks) if w.event == event)
