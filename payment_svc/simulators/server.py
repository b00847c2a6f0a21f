"""What the local provider simulators (Razorpay, PayPal) share: an aiohttp server on a free port
(or the one given), recorded API calls, injectable faults, background webhook deliveries and
`GET /healthz`. The tests drive them in-process; `mppo dev up` runs each as a process
(`python -m payment_svc.simulators paypal|razorpay`) so that members of a local system can pay
with PayPal or Razorpay through their real adapters."""

from __future__ import annotations

import asyncio
import contextlib
import html
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from mppo.devstack.probes import free_port


class _Recorded(Protocol):
    method: str
    path: str


class Delivery(Protocol):
    """A signed webhook as a simulator posts it: headers, raw body, the statuses it got."""

    headers: dict[str, str]
    body: bytes
    delivered: list[int]


class SimulatorServer:
    """Base of a simulator: subclasses add their routes in `_routes` and their API middleware."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.deliver_to: str | None = None
        self.base_url = ""
        self._faults: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _api_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host`:`port` (0: a free loopback port); returns the base URL."""

        @web.middleware
        async def api(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._api_middleware(request, handler)

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application(middlewares=[api])
        app.router.add_get("/healthz", healthz)
        self._routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        port = port or free_port()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Cancel pending deliveries and stop serving."""
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail_next(self, count: int = 1, mode: str = "500", match: str = "") -> None:
        """The next `count` API calls whose "METHOD /path" contains `match` fail: `500`, `429`,
        `timeout` (hang, no effect) or `lost` (act, then hang so the answer never arrives)."""
        self._faults.extend([(mode, match)] * count)

    def _take_fault(self, request: web.Request) -> str | None:
        call = f"{request.method} {request.path}"
        for index, (mode, match) in enumerate(self._faults):
            if match in call:
                del self._faults[index]
                return mode
        return None

    @staticmethod
    def _form_answer(request: web.Request, result: Any, done: str) -> web.Response:
        """A hosted page's form answer: `result` as JSON to a program, a short page saying
        `done` to a browser (it asks for text/html first)."""
        accept = request.headers.get("Accept", "")
        if "text/html" in accept and "text/html" in accept.split(",", 1)[0]:
            text = html.escape(done)
            page = (
                f"<!doctype html><html><head><meta charset='utf-8'><title>{text}</title></head>"
                f"<body><p>{text}</p><p>You can close this page and return to your group.</p>"
                "</body></html>"
            )
            return web.Response(text=page, content_type="text/html")
        return web.json_response(result)

    def _send(self, webhook: Delivery) -> None:
        """Post `webhook` to `deliver_to` in the background, when set."""
        if not self.deliver_to:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(webhook, self.deliver_to))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _deliver(webhook: Delivery, url: str, attempts: int = 4) -> None:
        """Post until a 2xx answer, `attempts` times at most, backing off from 0.2 s."""
        async with aiohttp.ClientSession() as session:
            for attempt in range(attempts):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.post(url, data=webhook.body, headers=webhook.headers) as r:
                        webhook.delivered.append(r.status)
                        if 200 <= r.status < 300:
                            return
                await asyncio.sleep(0.2 * 2**attempt)

    def api_calls(self, method: str, path_prefix: str) -> list[Any]:
        """The recorded calls of `method` under `path_prefix`."""
        found: list[_Recorded] = self.requests
        return [r for r in found if r.method == method and r.path.startswith(path_prefix)]
