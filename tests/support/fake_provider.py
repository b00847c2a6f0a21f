"""What the local provider fakes (Razorpay, PayPal) share: an aiohttp server on a free port,
recorded API calls, injectable faults, and background webhook deliveries."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web

from mppo.devstack.probes import free_port


class _Recorded(Protocol):
    method: str
    path: str


class FakeProviderServer:
    """Base of a fake: subclasses add their routes in `_routes` and their API middleware."""

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

    async def start(self) -> str:
        """Serve on a free loopback port; returns the base URL."""

        @web.middleware
        async def api(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._api_middleware(request, handler)

        app = web.Application(middlewares=[api])
        self._routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base_url = f"http://127.0.0.1:{port}"
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

    def api_calls(self, method: str, path_prefix: str) -> list[Any]:
        """The recorded calls of `method` under `path_prefix`."""
        found: list[_Recorded] = self.requests
        return [r for r in found if r.method == method and r.path.startswith(path_prefix)]
