"""A fixed reference checkout: the storage and messaging work a checkout of four *should* cost.

The replayed ceiling (:mod:`bench.ceiling`) moves with the code: when a change removes a
transaction, the ceiling it is compared with rises too, and removing work looks like no
progress. This reference never changes. One reference checkout of four is

* **30 business transactions**, each the shape of a real state change: lock one aggregate row
  (``SELECT … FOR UPDATE``), update it (version + status), insert a history row and an outbox
  row, commit;
* **20 acknowledged JetStream publishes** (file storage, ``Nats-Msg-Id`` for de-duplication)
  **with their consumes**: a durable pull consumer fetches each message and acks it
  (``ack_sync``, so the ack is confirmed like a consumer that commits before acking).

``concurrency`` reference checkouts run at a time, exactly like the load phase, on the same
Postgres and NATS servers; the rate at which they complete is the fixed reference ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench.ceiling import CeilingResult, run_concurrently, scratch_database

__all__ = ["REFERENCE_PUBLISHES", "REFERENCE_TRANSACTIONS", "ReferenceResult", "measure_reference"]

REFERENCE_TRANSACTIONS = 30
REFERENCE_PUBLISHES = 20
REFERENCE_DB = "bench_reference"
REFERENCE_STREAM = "BENCH_REFERENCE"
PAYLOAD = b"x" * 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ref_aggregate (
    id uuid PRIMARY KEY, version int NOT NULL, status text NOT NULL, body bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS ref_history (
    id bigserial PRIMARY KEY, aggregate_id uuid NOT NULL, from_status text NOT NULL,
    to_status text NOT NULL, at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ref_outbox (
    event_id uuid PRIMARY KEY, aggregate_id uuid NOT NULL, payload bytea NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz
);
TRUNCATE ref_aggregate, ref_history, ref_outbox;
"""


#: the same figures as the replay ceiling's: groups, work per group, concurrency, seconds
ReferenceResult = CeilingResult


async def _business_transaction(pool: asyncpg.Pool, aggregate: uuid.UUID, step: int) -> None:
    async with pool.acquire(timeout=30) as conn, conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM ref_aggregate WHERE id = $1 FOR UPDATE", aggregate
        )
        await conn.execute(
            "UPDATE ref_aggregate SET version = version + 1, status = $2 WHERE id = $1",
            aggregate,
            f"S{step}",
        )
        await conn.execute(
            "INSERT INTO ref_history (aggregate_id, from_status, to_status) VALUES ($1, $2, $3)",
            aggregate,
            status,
            f"S{step}",
        )
        await conn.execute(
            "INSERT INTO ref_outbox (event_id, aggregate_id, payload) VALUES ($1, $2, $3)",
            uuid.uuid4(),
            aggregate,
            PAYLOAD,
        )


async def measure_reference(
    postgres_server_url: str,
    nats_url: str,
    *,
    groups: int,
    concurrency: int,
    pool_size: int = 20,
    progress: Callable[[int], None] | None = None,
) -> ReferenceResult:
    """Run ``groups`` reference checkouts, ``concurrency`` at a time."""
    url = await scratch_database(postgres_server_url, REFERENCE_DB)
    pool = await asyncpg.create_pool(url, min_size=2, max_size=pool_size)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(REFERENCE_STREAM)
    await js.add_stream(
        StreamConfig(name=REFERENCE_STREAM, subjects=["benchref.>"], storage=StorageType.FILE)
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute(_SCHEMA)

        async def checkout(index: int) -> None:
            aggregate = uuid.uuid4()
            async with pool.acquire(timeout=30) as conn:
                await conn.execute(
                    "INSERT INTO ref_aggregate (id, version, status, body) VALUES ($1, 0, 'S', $2)",
                    aggregate,
                    PAYLOAD,
                )
            subject = f"benchref.c{index}"
            consumer = await js.pull_subscribe(
                subject,
                durable=f"ref{index}",
                stream=REFERENCE_STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
            )

            async def transactions() -> None:
                for step in range(REFERENCE_TRANSACTIONS):
                    await _business_transaction(pool, aggregate, step)

            async def messaging() -> None:
                for _ in range(REFERENCE_PUBLISHES):
                    await js.publish(
                        subject, PAYLOAD, headers={"Nats-Msg-Id": str(uuid.uuid4())}, timeout=10
                    )
                    (msg,) = await consumer.fetch(1, timeout=10)
                    await msg.ack_sync(timeout=10)

            try:
                await asyncio.gather(transactions(), messaging())
            finally:
                with contextlib.suppress(Exception):
                    await consumer.unsubscribe()
                with contextlib.suppress(Exception):
                    await js.delete_consumer(REFERENCE_STREAM, f"ref{index}")

        seconds = await run_concurrently(groups, concurrency, checkout, progress)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(REFERENCE_STREAM)
        await nc.close()
        await pool.close()
    return ReferenceResult(
        groups, REFERENCE_TRANSACTIONS, REFERENCE_PUBLISHES, concurrency, seconds
    )
