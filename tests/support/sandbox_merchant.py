"""Start the real sandbox merchant process (`python -m order_svc.sandbox_merchant`) for tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from mppo.devstack.probes import free_port
from tests.support.services import ChildProcess

TEST_SECRET = "test-merchant-secret"


@dataclass
class MerchantProcess(ChildProcess):
    """A running sandbox merchant."""

    addr: str

    @property
    def base_url(self) -> str:
        return f"http://{self.addr}"

    async def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST (with a body) or GET a /_control endpoint."""
        async with aiohttp.ClientSession() as session:
            url = f"{self.base_url}/_control/{path}"
            request = session.post(url, json=body) if body is not None else session.get(url)
            async with request as response:
                assert response.status < 300, await response.text()
                result: dict[str, Any] = await response.json()
                return result

    async def state(self) -> dict[str, Any]:
        """Catalogue, reservations, orders, faults and request counts."""
        return await self.control("state")

    async def orders_for(self, reference: str) -> list[dict[str, Any]]:
        """Merchant orders placed for our order id."""
        return [o for o in (await self.state())["orders"] if o["reference"] == reference]


def spawn_merchant(log_dir: Path, env: dict[str, str] | None = None) -> MerchantProcess:
    """Start a sandbox merchant process on a free port (not yet ready)."""
    addr = f"127.0.0.1:{free_port()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"merchant-{addr.rsplit(':', 1)[1]}.log"
    full_env = {
        **os.environ,
        "MPPO_MERCHANT_ADDR": addr,
        "MPPO_MERCHANT_SECRET": TEST_SECRET,
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "order_svc.sandbox_merchant"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return MerchantProcess(addr=addr, process=process, log=log)


async def start_merchant(log_dir: Path, env: dict[str, str] | None = None) -> MerchantProcess:
    """Start a sandbox merchant on a free port and wait for /healthz."""
    merchant = spawn_merchant(log_dir, env)
    process = merchant.process
    deadline = asyncio.get_running_loop().time() + 20
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"merchant exited:\n{merchant.log_text()}")
            try:
                async with session.get(f"{merchant.base_url}/healthz") as response:
                    if response.status == 200:
                        return merchant
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    merchant.stop()
    raise AssertionError(f"merchant not ready:\n{merchant.log_text()}")
