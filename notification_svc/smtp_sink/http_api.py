"""The sink's HTTP API: list and clear received messages, announce the SMTP address."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from notification_svc.smtp_sink.store import MessageStore


def build_app(store: MessageStore, info: Callable[[], dict[str, str]]) -> web.Application:
    """``GET /messages``, ``DELETE /messages``, ``GET /info``, ``GET /healthz``."""

    async def list_messages(request: web.Request) -> web.Response:
        found = store.find(
            to=request.query.get("to", ""), message_id=request.query.get("message_id", "")
        )
        return web.json_response({"messages": [m.to_json() for m in found]})

    async def clear_messages(request: web.Request) -> web.Response:
        return web.json_response({"deleted": store.clear()})

    async def get_info(request: web.Request) -> web.Response:
        return web.json_response({**info(), "count": len(store.messages)})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/messages", list_messages)
    app.router.add_delete("/messages", clear_messages)
    app.router.add_get("/info", get_info)
    app.router.add_get("/healthz", healthz)
    return app
