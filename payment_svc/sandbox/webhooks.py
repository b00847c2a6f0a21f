"""Stripe-signed webhook delivery with bounded retries, and the faults tests can inject.

Each event is signed ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``
(a fresh timestamp per attempt, as Stripe does) and POSTed until a 2xx or the attempts run
out. Faults (``/_sandbox/faults``): ``fail_next`` (the next N attempts fail without being
sent), ``drop_next`` (the next N events are never delivered), ``delay_seconds`` (wait before
each send), ``duplicate`` (send every event N extra times), ``hold`` (queue events until
``release``, which sends them one after another, in order or reversed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from payment_svc.sandbox.config import SandboxConfig
from payment_svc.sandbox.store import Obj, Store

logger = logging.getLogger(__name__)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``body``."""
    moment = int(time.time()) if timestamp is None else timestamp
    signed = f"{moment}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def event_body(event: Obj) -> bytes:
    """The bytes we POST for ``event`` (without the sandbox's delivery bookkeeping)."""
    return json.dumps({k: v for k, v in event.items() if not k.startswith("_")}).encode()


@dataclass
class Faults:
    """What delivery should do wrong, for tests."""

    fail_next: int = 0
    drop_next: int = 0
    delay_seconds: float = 0.0
    duplicate: int = 0
    hold: bool = False

    def update(self, values: dict[str, Any]) -> None:
        """Apply the given fields (``reset`` first clears everything)."""
        if values.get("reset"):
            self.__init__()  # type: ignore[misc]
        self.fail_next = int(values.get("fail_next", self.fail_next))
        self.drop_next = int(values.get("drop_next", self.drop_next))
        self.delay_seconds = float(values.get("delay_seconds", self.delay_seconds))
        self.duplicate = int(values.get("duplicate", self.duplicate))
        self.hold = bool(values.get("hold", self.hold))

    def to_json(self) -> dict[str, Any]:
        """As JSON."""
        return asdict(self)


class Deliverer:
    """Delivers events in the background, one task per event."""

    def __init__(self, config: SandboxConfig, store: Store) -> None:
        self._config = config
        self._store = store
        self.faults = Faults()
        self._held: list[Obj] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client and resume deliveries left pending by a restart."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.webhook_timeout)
        )
        for event in list(self._store.events.values()):
            if event.get("_delivery", {}).get("status") in ("pending", "retrying"):
                self.submit(event)

    async def stop(self) -> None:
        """Stop delivering (pending events resume at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._session is not None:
            await self._session.close()

    def submit(self, event: Obj) -> None:
        """Queue a new event for delivery (applying drop / hold / duplicate faults)."""
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            self._store.mark_delivery(event, "dropped", 0, "dropped by fault injection")
            logger.info("sandbox: dropped event %s (%s)", event["id"], event["type"])
            return
        if self.faults.hold:
            self._store.mark_delivery(event, "held", 0)
            self._held.append(event)
            return
        self._spawn(event, track=True)
        for _ in range(self.faults.duplicate):
            self._spawn(event, track=False)

    def release(self, reverse: bool) -> int:
        """Deliver the held events (in creation order, or reversed); stop holding."""
        held, self._held = self._held, []
        self.faults.hold = False
        ordered = list(reversed(held)) if reverse else held

        async def one_by_one() -> None:
            # sequentially, so the receiver sees exactly this order
            for event in ordered:
                await self._deliver(event, track=True)

        task = asyncio.get_running_loop().create_task(one_by_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return len(held)

    def resend(self, event: Obj) -> None:
        """Deliver ``event`` once more, now."""
        self._spawn(event, track=False)

    def _spawn(self, event: Obj, *, track: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(event, track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: Obj, track: bool) -> None:
        config = self._config
        delay = config.webhook_backoff
        error = ""
        for attempt in range(1, config.webhook_attempts + 1):
            if self.faults.delay_seconds > 0:
                await asyncio.sleep(self.faults.delay_seconds)
            error = await self._attempt(event)
            if not error:
                if track:
                    self._store.mark_delivery(event, "delivered", attempt)
                return
            logger.info("sandbox: webhook %s attempt %s failed: %s", event["id"], attempt, error)
            if track:
                self._store.mark_delivery(event, "retrying", attempt, error)
            if attempt < config.webhook_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.webhook_max_backoff)
        if track:
            self._store.mark_delivery(event, "failed", config.webhook_attempts, error)
        logger.warning("sandbox: gave up delivering %s", event["id"])

    async def _attempt(self, event: Obj) -> str:
        if self.faults.fail_next > 0:
            self.faults.fail_next -= 1
            return "failed by fault injection"
        assert self._session is not None
        body = event_body(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(self._config.webhook_secret, body),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) mppo-sandbox",
        }
        try:
            async with self._session.post(
                self._config.webhook_url, data=body, headers=headers
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
