"""The sandbox's aiohttp application: Stripe-compatible API, hosted page, test control."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mppo.platform.config import ConfigError
from mppo.platform.logs import configure_logging
from payment_svc.sandbox import forms
from payment_svc.sandbox.config import SandboxConfig
from payment_svc.sandbox.page import checkout_page, result_page
from payment_svc.sandbox.store import Obj, SandboxError, Store, public
from payment_svc.sandbox.webhooks import Deliverer, event_body, sign

logger = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", SandboxConfig)
STORE_KEY = web.AppKey("store", Store)
DELIVERER_KEY = web.AppKey("deliverer", Deliverer)

ApiHandler = Callable[[web.Request, dict[str, Any]], Obj]


def _error(error: SandboxError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


async def _params(request: web.Request) -> dict[str, Any]:
    pairs = list(request.query.items())
    if request.method == "POST" and request.can_read_body:
        body = await request.post()
        pairs += [(k, v) for k, v in body.items() if isinstance(v, str)]
    return forms.decode(pairs)


def api(handler: ApiHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a Stripe API handler: auth, form decoding, Idempotency-Key, Stripe errors."""

    async def wrapper(request: web.Request) -> web.Response:
        config = request.app[CONFIG_KEY]
        store = request.app[STORE_KEY]
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {config.api_key}":
            return _error(
                SandboxError(401, "Invalid API Key provided.", type_="invalid_request_error")
            )
        params = await _params(request)
        key = request.headers.get("Idempotency-Key", "") if request.method == "POST" else ""
        scope = f"{request.method} {request.path} {key}"
        fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        if key:
            seen = store.remembered(scope)
            if seen is not None:
                if seen["fingerprint"] != fingerprint:
                    return _error(
                        SandboxError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with.",
                            type_="idempotency_error",
                        )
                    )
                return web.json_response(
                    seen["body"],
                    status=int(seen["status"]),
                    headers={"Idempotent-Replayed": "true"},
                )
        try:
            status, body = 200, handler(request, params)
        except SandboxError as error:
            status, body = error.status, error.body()
        if key:
            store.remember(scope, fingerprint, status, body)
        return web.json_response(body, status=status)

    return wrapper


def _amount(params: dict[str, Any], name: str) -> int | None:
    if name not in params:
        return None
    try:
        return int(params[name])
    except (TypeError, ValueError):
        raise SandboxError(
            400, f"Invalid integer: {params[name]}", code="parameter_invalid"
        ) from None


def _expand(params: dict[str, Any]) -> list[str]:
    value = params.get("expand") or []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def create_session(request: web.Request, params: dict[str, Any]) -> Obj:
    """POST /v1/checkout/sessions."""
    return public(request.app[STORE_KEY].create_session(params))


def get_session(request: web.Request, params: dict[str, Any]) -> Obj:
    """GET /v1/checkout/sessions/{id}."""
    return public(request.app[STORE_KEY].session(request.match_info["id"]))


def expire_session(request: web.Request, params: dict[str, Any]) -> Obj:
    """POST /v1/checkout/sessions/{id}/expire."""
    return public(request.app[STORE_KEY].expire_session(request.match_info["id"]))


def get_intent(request: web.Request, params: dict[str, Any]) -> Obj:
    """GET /v1/payment_intents/{id}."""
    store = request.app[STORE_KEY]
    return store.intent_view(store.intent(request.match_info["id"]), _expand(params))


def capture_intent(request: web.Request, params: dict[str, Any]) -> Obj:
    """POST /v1/payment_intents/{id}/capture."""
    store = request.app[STORE_KEY]
    intent = store.capture(request.match_info["id"], _amount(params, "amount_to_capture"))
    return store.intent_view(intent, _expand(params))


def cancel_intent(request: web.Request, params: dict[str, Any]) -> Obj:
    """POST /v1/payment_intents/{id}/cancel."""
    store = request.app[STORE_KEY]
    intent = store.cancel(request.match_info["id"], str(params.get("cancellation_reason", "")))
    return store.intent_view(intent, _expand(params))


def create_refund(request: web.Request, params: dict[str, Any]) -> Obj:
    """POST /v1/refunds."""
    intent_id = str(params.get("payment_intent", ""))
    if not intent_id:
        raise SandboxError(400, "payment_intent is required", code="parameter_missing")
    store = request.app[STORE_KEY]
    return public(store.refund(intent_id, _amount(params, "amount"), str(params.get("reason", ""))))


async def checkout(request: web.Request) -> web.Response:
    """GET /checkout/{id}: the hosted page."""
    store = request.app[STORE_KEY]
    try:
        session = store.session(request.match_info["id"])
    except SandboxError as error:
        return web.Response(text=error.message, status=404)
    intent = store.intent(str(session["payment_intent"]))
    return web.Response(text=checkout_page(session, intent), content_type="text/html")


async def pay(request: web.Request) -> web.Response:
    """POST /checkout/{id}/pay: the page's form (``Accept: application/json`` for JSON)."""
    store = request.app[STORE_KEY]
    wants_json = "application/json" in request.headers.get("Accept", "")
    if request.content_type == "application/json":
        fields = {str(k): str(v) for k, v in (await request.json()).items()}
    else:
        fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    try:
        session = store.session(request.match_info["id"])
        outcome = store.pay(
            session["id"], fields.get("card_number", ""), fields.get("action", "pay")
        )
    except SandboxError as error:
        if wants_json:
            return _error(error)
        return web.Response(text=error.message, status=error.status)
    if wants_json:
        return web.json_response({**outcome, "session": session["id"]})
    return web.Response(text=result_page(session, outcome), content_type="text/html")


async def ledger(request: web.Request) -> web.Response:
    """GET /_sandbox/ledger?group_id=&payment_intent=."""
    view = request.app[STORE_KEY].ledger_view(
        request.query.get("group_id", ""), request.query.get("payment_intent", "")
    )
    return web.json_response(view)


def _event_view(event: Obj) -> Obj:
    obj = event["data"]["object"]
    intent = obj.get("payment_intent") if obj.get("object") != "payment_intent" else obj["id"]
    return {
        "id": event["id"],
        "type": event["type"],
        "created": event["created"],
        "payment_intent": intent,
        "delivery": event.get("_delivery", {}),
        "body": event_body(event).decode(),
    }


async def list_events(request: web.Request) -> web.Response:
    """GET /_sandbox/events?payment_intent=&type=."""
    wanted_pi, wanted_type = request.query.get("payment_intent", ""), request.query.get("type", "")
    views = [_event_view(e) for e in request.app[STORE_KEY].events.values()]
    views = [
        v
        for v in views
        if (not wanted_pi or v["payment_intent"] == wanted_pi)
        and (not wanted_type or v["type"] == wanted_type)
    ]
    return web.json_response({"events": views})


async def signed_event(request: web.Request) -> web.Response:
    """GET /_sandbox/events/{id}/signed: the body and a freshly signed header."""
    event = request.app[STORE_KEY].events.get(request.match_info["id"])
    if event is None:
        return web.json_response({"error": "no such event"}, status=404)
    body = event_body(event)
    signature = sign(request.app[CONFIG_KEY].webhook_secret, body)
    return web.json_response({"body": body.decode(), "headers": {"Stripe-Signature": signature}})


async def resend_event(request: web.Request) -> web.Response:
    """POST /_sandbox/events/{id}/resend."""
    event = request.app[STORE_KEY].events.get(request.match_info["id"])
    if event is None:
        return web.json_response({"error": "no such event"}, status=404)
    request.app[DELIVERER_KEY].resend(event)
    return web.json_response({"resent": event["id"]})


async def faults(request: web.Request) -> web.Response:
    """GET or POST /_sandbox/faults (JSON: fail_next, drop_next, delay_seconds, duplicate,
    hold, reset)."""
    deliverer = request.app[DELIVERER_KEY]
    if request.method == "POST":
        deliverer.faults.update(await request.json())
    return web.json_response(deliverer.faults.to_json())


async def clock(request: web.Request) -> web.Response:
    """GET or POST /_sandbox/clock (JSON ``{"offset_seconds": -597600}``): how far the sandbox's
    clock is from real time. A negative offset makes a hold placed now as old as one placed
    that long ago, so its ``capture_before`` comes that much sooner (test holds that lapse
    without waiting days); 0 resets it."""
    store = request.app[STORE_KEY]
    if request.method == "POST":
        body = await request.json()
        try:
            store.clock_offset = float(body.get("offset_seconds", 0))
        except (TypeError, ValueError):
            return web.json_response({"error": "offset_seconds must be a number"}, status=400)
    return web.json_response({"offset_seconds": store.clock_offset, "now": int(store.now())})


async def release(request: web.Request) -> web.Response:
    """POST /_sandbox/webhooks/release (JSON ``{"order": "reverse"}`` or in order)."""
    body = await request.json() if request.can_read_body else {}
    count = request.app[DELIVERER_KEY].release(reverse=body.get("order") == "reverse")
    return web.json_response({"released": count})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz."""
    return web.json_response({"status": "ok"})


def build_app(config: SandboxConfig) -> web.Application:
    """The application with its store and deliverer (started on app startup)."""
    app = web.Application()
    store = Store(config.state_file, config.public_url, config.authorization_days)
    deliverer = Deliverer(config, store)
    store.on_event = deliverer.submit
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[DELIVERER_KEY] = deliverer

    async def on_startup(app: web.Application) -> None:
        await deliverer.start()

    async def on_cleanup(app: web.Application) -> None:
        await deliverer.stop()
        store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/checkout/sessions", api(create_session))
    app.router.add_get("/v1/checkout/sessions/{id}", api(get_session))
    app.router.add_post("/v1/checkout/sessions/{id}/expire", api(expire_session))
    app.router.add_get("/v1/payment_intents/{id}", api(get_intent))
    app.router.add_post("/v1/payment_intents/{id}/capture", api(capture_intent))
    app.router.add_post("/v1/payment_intents/{id}/cancel", api(cancel_intent))
    app.router.add_post("/v1/refunds", api(create_refund))
    app.router.add_get("/checkout/{id}", checkout)
    app.router.add_post("/checkout/{id}/pay", pay)
    app.router.add_get("/_sandbox/ledger", ledger)
    app.router.add_get("/_sandbox/events", list_events)
    app.router.add_get("/_sandbox/events/{id}/signed", signed_event)
    app.router.add_post("/_sandbox/events/{id}/resend", resend_event)
    app.router.add_route("*", "/_sandbox/faults", faults)
    app.router.add_post("/_sandbox/webhooks/release", release)
    app.router.add_route("*", "/_sandbox/clock", clock)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(config: SandboxConfig, stopping: asyncio.Event) -> None:
    """Serve until ``stopping`` is set."""
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    logger.info("sandbox provider listening on %s:%s", config.host, config.port)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
        logger.info("sandbox provider stopped")


async def _main(config: SandboxConfig) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await serve(config, stopping)


def main() -> None:
    """Process entry point; a bad setting (a development secret outside dev/test) stops it
    with exit code 2 and one line naming the variable."""
    try:
        config = SandboxConfig.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"sandbox: configuration error: {exc}\n")
        raise SystemExit(2) from None
    configure_logging("sandbox", config.log_level)
    asyncio.run(_main(config))
