"""Drive group checkouts through the REST gateway and time every step.

One checkout = create a group (host), add members, each member joins, open, every member pays
on their hosted link (the sandbox provider), then wait for ``order.confirmed`` on JetStream.
Closed loop (``concurrency`` checkouts in flight) or open loop (a new checkout every
``1/rate`` seconds, whatever is still in flight).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from mppo.demo import CheckoutResult, EventTap, GatewayClient, run_checkout

__all__ = ["LoadResult", "run_load"]

STEP_LAST_PAY_TO_CONFIRMED = "last payment -> order.confirmed"
STEP_TOTAL = "checkout (create -> order.confirmed)"


@dataclass
class LoadResult:
    """What one phase measured."""

    started: int = 0
    completed: int = 0
    seconds: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Seconds per step name."""
    errors: Counter[str] = field(default_factory=Counter)
    checkouts: list[CheckoutResult] = field(default_factory=list)

    @property
    def groups_per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


async def _one(
    client: GatewayClient,
    tap: EventTap,
    result: LoadResult,
    members: int,
    confirm_timeout: float,
) -> None:
    began = time.time()
    result.started += 1
    try:
        checkout = await run_checkout(client, members=members)
        confirmed = await tap.wait(checkout.group_id, "order.confirmed", confirm_timeout)
    except TimeoutError:
        result.errors["order.confirmed not seen in time"] += 1
        return
    except Exception as exc:  # every failure is counted, by kind, and the run goes on
        result.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
        return
    result.samples[STEP_LAST_PAY_TO_CONFIRMED].append(
        confirmed.stored_at - checkout.last_payment_at
    )
    result.samples[STEP_TOTAL].append(confirmed.stored_at - began)
    result.checkouts.append(checkout)
    result.completed += 1


async def run_load(
    gateway_url: str,
    state_dir: Path,
    tap: EventTap,
    *,
    groups: int,
    members: int = 3,
    concurrency: int = 8,
    rate: float | None = None,
    max_seconds: float = 600.0,
    confirm_timeout: float = 60.0,
    progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Run ``groups`` checkouts (fewer if ``max_seconds`` passes first) and time them."""
    result = LoadResult()

    def timer(step: str, seconds: float) -> None:
        result.samples[step].append(seconds)

    connector = aiohttp.TCPConnector(limit=max(100, concurrency * 4))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:
        client = GatewayClient(http, gateway_url, state_dir, timer)
        started = time.perf_counter()
        stop_at = started + max_seconds
        tasks: set[asyncio.Task[None]] = set()

        def spawn() -> None:
            task = asyncio.ensure_future(_one(client, tap, result, members, confirm_timeout))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if progress is not None:
                task.add_done_callback(lambda _t: progress(result))

        if rate is None:
            remaining = groups

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0 and time.perf_counter() < stop_at:
                    remaining -= 1
                    await _one(client, tap, result, members, confirm_timeout)
                    if progress is not None:
                        progress(result)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            interval = 1.0 / rate
            for i in range(groups):
                due = started + i * interval
                now = time.perf_counter()
                if now > stop_at:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                spawn()
            while tasks:
                await asyncio.wait(set(tasks))
        result.seconds = time.perf_counter() - started
    return result
