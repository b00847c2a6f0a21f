"""Start the real sandbox provider process (``python -m payment_svc.sandbox``) and talk to its
test endpoints: pay through the hosted page's form, read the ledger and events, set faults."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from mppo.devstack.probes import free_port
from payment_svc.sandbox.config import DEV_API_KEY, DEV_WEBHOOK_SECRET
from tests.support.services import ChildProcess

CARD_SUCCESS = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_CAPTURE_FAILS = "4000000000000341"


@dataclass
class SandboxProcess(ChildProcess):
    """A running sandbox: its process, address and log."""

    addr: str
    webhook_secret: str = DEV_WEBHOOK_SECRET
    api_key: str = DEV_API_KEY

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://{self.addr}"

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, **kwargs) as response,
        ):
            payload = await response.json()
            if response.status >= 400:
                raise AssertionError(f"{method} {path}: {response.status} {payload}")
            return payload

    async def pay(self, payment_link: str, card: str = CARD_SUCCESS, action: str = "pay") -> Any:
        """Submit the hosted page's form (as a browser would), asking for JSON back."""
        async with aiohttp.ClientSession() as http:
            async with http.get(payment_link) as page:
                html = await page.text()
                assert page.status == 200, html
            async with http.post(
                payment_link.rstrip("/") + "/pay",
                data={"card_number": card, "action": action},
                headers={"Accept": "application/json"},
            ) as response:
                return await response.json()

    async def ledger(self, *, group_id: str = "", payment_intent: str = "") -> Any:
        """``GET /_sandbox/ledger``."""
        params = {
            k: v for k, v in (("group_id", group_id), ("payment_intent", payment_intent)) if v
        }
        return await self._json("GET", "/_sandbox/ledger", params=params)

    async def events(self, *, payment_intent: str = "", type_: str = "") -> list[Any]:
        """``GET /_sandbox/events``."""
        params = {k: v for k, v in (("payment_intent", payment_intent), ("type", type_)) if v}
        found: list[Any] = (await self._json("GET", "/_sandbox/events", params=params))["events"]
        return found

    async def signed(self, event_id: str) -> Any:
        """``GET /_sandbox/events/{id}/signed``: body and a freshly signed header."""
        return await self._json("GET", f"/_sandbox/events/{event_id}/signed")

    async def faults(self, **values: Any) -> Any:
        """``POST /_sandbox/faults``."""
        return await self._json("POST", "/_sandbox/faults", json=values)

    async def clock(self, offset_seconds: float) -> Any:
        """``POST /_sandbox/clock``: run the sandbox's clock this far from real time."""
        return await self._json("POST", "/_sandbox/clock", json={"offset_seconds": offset_seconds})

    async def release(self, order: str = "in_order") -> Any:
        """``POST /_sandbox/webhooks/release``."""
        return await self._json("POST", "/_sandbox/webhooks/release", json={"order": order})


def start_sandbox(
    log_dir: Path, *, webhook_url: str, env: Mapping[str, str] | None = None
) -> SandboxProcess:
    """Start the sandbox on a free port, state in ``log_dir``, webhooks to ``webhook_url``."""
    addr = f"127.0.0.1:{free_port()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"sandbox-{addr.rsplit(':', 1)[1]}.log"
    full_env = {
        **os.environ,
        # the development key and secret are accepted only in dev/test
        "MPPO_ENV": "test",
        "MPPO_SANDBOX_ADDR": addr,
        "MPPO_SANDBOX_WEBHOOK_URL": webhook_url,
        "MPPO_SANDBOX_STATE_FILE": str(log_dir / f"sandbox-{addr.rsplit(':', 1)[1]}.jsonl"),
        "MPPO_SANDBOX_WEBHOOK_BACKOFF": "0.2",
        "MPPO_SANDBOX_WEBHOOK_MAX_BACKOFF": "1",
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "payment_svc.sandbox"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return SandboxProcess(addr=addr, process=process, log=log)


async def wait_ready(sandbox: SandboxProcess, within: float = 20) -> None:
    """Poll ``/healthz`` until it answers."""
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if sandbox.process.poll() is not None:
                break
            try:
                async with http.get(sandbox.url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"sandbox not ready:\n{sandbox.log_text()}")
