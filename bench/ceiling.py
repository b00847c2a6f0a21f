"""The machine's raw ceiling for a checkout's storage and messaging work, with no business logic.

A checkout of the real system commits some number of Postgres transactions and JetStream
publishes (measured during the load run: ``pg_stat_database.xact_commit`` over the service
databases and the message count of the MPPO streams, divided by completed checkouts). Here
``concurrency`` virtual checkouts at a time each replay that many one-row INSERT transactions
(on a pool, in a scratch database of the same server) and that many publishes with a
``Nats-Msg-Id`` (to a file-storage stream on the same NATS server): the rate at which those
complete is the ceiling our throughput is compared with.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import nats
from nats.js.api import StorageType, StreamConfig

__all__ = ["CeilingResult", "measure_ceiling", "run_concurrently", "scratch_database"]

CEILING_DB = "bench_ceiling"
CEILING_STREAM = "BENCH_CEILING"
PAYLOAD = b"x" * 200


@dataclass(frozen=True)
class CeilingResult:
    groups: int
    transactions_per_group: int
    publishes_per_group: int
    concurrency: int
    seconds: float

    @property
    def groups_per_second(self) -> float:
        return self.groups / self.seconds if self.seconds > 0 else 0.0


async def run_concurrently(
    count: int,
    concurrency: int,
    job: Callable[[int], Awaitable[None]],
    progress: Callable[[int], None] | None = None,
) -> float:
    """Run ``job(0) … job(count - 1)``, ``concurrency`` at a time; the seconds it took."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await job(index)
            done += 1
            if progress is not None:
                progress(done)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def scratch_database(server_url: str, name: str) -> str:
    """The URL of database `name` on the server, created if missing (a bench's scratch)."""
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def measure_ceiling(
    postgres_server_url: str,
    nats_url: str,
    *,
    groups: int,
    transactions_per_group: float,
    publishes_per_group: float,
    concurrency: int,
    pool_size: int = 20,
    progress: Callable[[int], None] | None = None,
) -> CeilingResult:
    """Replay ``groups`` checkouts' worth of bare transactions and publishes."""
    txns = max(1, math.ceil(transactions_per_group))
    pubs = max(1, math.ceil(publishes_per_group))
    db_url = await scratch_database(postgres_server_url, CEILING_DB)
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=pool_size)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(CEILING_STREAM)
    await js.add_stream(
        StreamConfig(name=CEILING_STREAM, subjects=["benchceil.>"], storage=StorageType.FILE)
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS ceiling (id uuid PRIMARY KEY, body bytea NOT NULL,"
                " at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute("TRUNCATE ceiling")

        async def transactions() -> None:
            for _ in range(txns):
                async with pool.acquire(timeout=30) as conn, conn.transaction():
                    await conn.execute(
                        "INSERT INTO ceiling (id, body) VALUES ($1, $2)", uuid.uuid4(), PAYLOAD
                    )

        async def publishes() -> None:
            for _ in range(pubs):
                event_id = str(uuid.uuid4())
                await js.publish(
                    "benchceil.event", PAYLOAD, headers={"Nats-Msg-Id": event_id}, timeout=10
                )

        async def checkout(_index: int) -> None:
            await asyncio.gather(transactions(), publishes())

        seconds = await run_concurrently(groups, concurrency, checkout, progress)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(CEILING_STREAM)
        await nc.close()
        await pool.close()
    return CeilingResult(groups, txns, pubs, concurrency, seconds)
