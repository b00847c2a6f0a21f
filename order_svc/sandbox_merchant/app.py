"""The sandbox merchant's HTTP API (aiohttp).

Merchant API — every request signed (``X-Mppo-Signature``, see
order_svc/adapters/merchant_signature.py); every POST needs an ``Idempotency-Key`` (a repeat
with the same key and body returns the first answer; with another body, 422
``IDEMPOTENCY_KEY_REUSED``). Errors are ``{"error": CODE, "detail": text}``.

- ``GET  /v1/catalogue`` → ``{"items": [{"sku","name","unit_price_minor","currency","stock"}]}``
- ``POST /v1/reservations`` ``{"reference","currency","items":[{"sku","quantity",
  "unit_price_minor"}]}`` → 201 reservation; 409 ``OUT_OF_STOCK`` / ``PRICE_MISMATCH``;
  422 ``UNKNOWN_ITEM``
- ``POST /v1/orders`` ``{"reference","reservation_id","total_minor","currency"}`` → 201
  ``{"merchant_order_id","status":"placed",...}``; 422 ``MERCHANT_REJECTED``
- ``POST /v1/orders/cancel`` ``{"reference"}`` → 200 ``{"result": "cancelled"|"released"|
  "nothing"}`` (cancels the order and/or frees the reservation; stock returns)
- ``GET  /v1/orders?reference=…`` → ``{"orders": [...]}``

Test control (unsigned; disabled with ``MPPO_MERCHANT_CONTROL=0``):

- ``POST /_control/faults`` ``{"action": "catalogue"|"reserve"|"place"|"cancel"|"any",
  "fault": "reject"|"out_of_stock"|"error"|"timeout", "times": 1 (-1 = always),
  "reference": optional, "delay_seconds": 10}``. ``error`` answers 503 before doing anything
  (fail once: the client's retry succeeds); ``timeout`` does the work, then answers only after
  ``delay_seconds`` (the client times out, retries with the same key, gets the stored answer).
- ``POST /_control/stock`` ``{"sku","stock"}``; ``POST /_control/reset``;
  ``GET /_control/state`` (catalogue, reservations, orders, faults, request counts).
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from order_svc.adapters.merchant_signature import HEADER, SignatureError, verify
from order_svc.sandbox_merchant.catalogue import load_catalogue
from order_svc.sandbox_merchant.state import MerchantState, Reply

logger = logging.getLogger(__name__)

STATE_KEY = web.AppKey("state", MerchantState)
SETTINGS_KEY = web.AppKey("settings", dict)
Operation = Callable[[MerchantState, dict[str, Any]], Reply]


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, code: str, detail: str) -> web.Response:
    return _json(status, {"error": code, "detail": detail})


async def _verified_body(request: web.Request) -> bytes:
    body = await request.read()
    secret: bytes = request.app[SETTINGS_KEY]["secret"]
    try:
        verify(secret, request.headers.get(HEADER), request.method, request.raw_path, body)
    except SignatureError as exc:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "BAD_SIGNATURE", "detail": str(exc)}),
            content_type="application/json",
        ) from exc
    return body


def _persist(app: web.Application) -> None:
    app[STATE_KEY].save(app[SETTINGS_KEY]["state_file"])


def _count(state: MerchantState, action: str) -> None:
    state.requests[action] = state.requests.get(action, 0) + 1


def _mutating(
    action: str, operation: Operation
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        raw = await _verified_body(request)
        state = request.app[STATE_KEY]
        _count(state, action)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return _error(400, "IDEMPOTENCY_KEY_REQUIRED", "send an Idempotency-Key header")
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return _error(400, "BAD_REQUEST", "body is not JSON")
        fingerprint = hashlib.sha256(raw).hexdigest()
        record_key = f"{action}:{key}"
        record = state.idempotency.get(record_key)
        if record is not None:
            if record["fingerprint"] != fingerprint:
                return _error(422, "IDEMPOTENCY_KEY_REUSED", "key used with another body")
            logger.info("merchant %s replay of key %s", action, key)
            return _json(record["status"], record["body"])
        fault = state.take_fault(action, str(body.get("reference", "")))
        if fault is not None:
            logger.info("merchant %s: injected fault %s", action, fault["fault"])
            if fault["fault"] == "error":
                _persist(request.app)
                return _error(503, "UNAVAILABLE", "injected failure")
            if fault["fault"] == "reject":
                status, reply = 422, {"error": "MERCHANT_REJECTED", "detail": "injected rejection"}
            elif fault["fault"] == "out_of_stock":
                status, reply = 409, {"error": "OUT_OF_STOCK", "detail": "injected out of stock"}
            else:
                status, reply = operation(state, body)
        else:
            status, reply = operation(state, body)
        if status < 500:
            state.idempotency[record_key] = {
                "fingerprint": fingerprint,
                "status": status,
                "body": reply,
            }
        _persist(request.app)
        if fault is not None and fault["fault"] == "timeout":
            await asyncio.sleep(float(fault.get("delay_seconds", 10)))
        return _json(status, reply)

    return handle


async def catalogue(request: web.Request) -> web.Response:
    """GET /v1/catalogue."""
    await _verified_body(request)
    state = request.app[STATE_KEY]
    _count(state, "catalogue")
    fault = state.take_fault("catalogue", "")
    if fault is not None:
        _persist(request.app)
        if fault["fault"] == "timeout":
            await asyncio.sleep(float(fault.get("delay_seconds", 10)))
        else:
            return _error(503, "UNAVAILABLE", "injected failure")
    return _json(200, {"items": list(state.catalogue.values())})


async def list_orders(request: web.Request) -> web.Response:
    """GET /v1/orders?reference=…"""
    await _verified_body(request)
    reference = request.query.get("reference", "")
    orders = [
        o
        for o in request.app[STATE_KEY].orders.values()
        if not reference or o["reference"] == reference
    ]
    return _json(200, {"orders": orders})


async def control_faults(request: web.Request) -> web.Response:
    """POST /_control/faults: arm a fault."""
    body = await request.json()
    if body.get("fault") not in ("reject", "out_of_stock", "error", "timeout"):
        return _error(400, "BAD_REQUEST", "fault must be reject, out_of_stock, error or timeout")
    if body.get("action") not in ("catalogue", "reserve", "place", "cancel", "any"):
        return _error(400, "BAD_REQUEST", "action must be catalogue, reserve, place, cancel, any")
    fault = {
        "action": body["action"],
        "fault": body["fault"],
        "remaining": int(body.get("times", 1)),
        "reference": str(body.get("reference", "")),
        "delay_seconds": float(body.get("delay_seconds", 10)),
    }
    request.app[STATE_KEY].faults.append(fault)
    _persist(request.app)
    return _json(201, fault)


async def control_stock(request: web.Request) -> web.Response:
    """POST /_control/stock: set one SKU's stock."""
    body = await request.json()
    item = request.app[STATE_KEY].catalogue.get(str(body.get("sku", "")))
    if item is None:
        return _error(404, "UNKNOWN_ITEM", "no such sku")
    item["stock"] = int(body["stock"])
    _persist(request.app)
    return _json(200, item)


async def control_reset(request: web.Request) -> web.Response:
    """POST /_control/reset: the default catalogue, nothing else."""
    settings = request.app[SETTINGS_KEY]
    request.app[STATE_KEY] = MerchantState(catalogue=load_catalogue(settings["catalogue_file"]))
    _persist(request.app)
    return _json(200, {"reset": True})


async def control_state(request: web.Request) -> web.Response:
    """GET /_control/state."""
    state = request.app[STATE_KEY]
    return _json(
        200,
        {
            "catalogue": state.catalogue,
            "reservations": list(state.reservations.values()),
            "orders": list(state.orders.values()),
            "faults": state.faults,
            "requests": state.requests,
        },
    )


async def healthz(_request: web.Request) -> web.Response:
    """GET /healthz."""
    return _json(200, {"status": "ok"})


def create_app(
    *,
    secret: bytes,
    state_file: Path | None = None,
    catalogue_file: str | None = None,
    control: bool = True,
) -> web.Application:
    """The sandbox merchant application."""
    app = web.Application()
    app[SETTINGS_KEY] = {
        "secret": secret,
        "state_file": state_file,
        "catalogue_file": catalogue_file,
    }
    app[STATE_KEY] = MerchantState.load(state_file, load_catalogue(catalogue_file))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/catalogue", catalogue)
    app.router.add_post("/v1/reservations", _mutating("reserve", MerchantState.reserve))
    app.router.add_post("/v1/orders/cancel", _mutating("cancel", MerchantState.cancel))
    app.router.add_post("/v1/orders", _mutating("place", MerchantState.place))
    app.router.add_get("/v1/orders", list_orders)
    if control:
        app.router.add_post("/_control/faults", control_faults)
        app.router.add_post("/_control/stock", control_stock)
        app.router.add_post("/_control/reset", control_reset)
        app.router.add_get("/_control/state", control_state)
    return app
