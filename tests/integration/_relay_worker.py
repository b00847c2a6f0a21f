"""Subprocess helper: drain the outbox of one database with an OutboxRelay, then exit 0.

Usage: ``python _relay_worker.py DB_URL NATS_URL PREFIX [BATCH]``. With
``MPPO_FAULT=relay_after_publish`` the process dies (exit 137) right after its first publish.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from mppo.platform.db import create_engine
from mppo.platform.messaging import connect
from mppo.platform.outbox import OutboxRelay


async def main(db_url: str, nats_url: str, prefix: str, batch: int) -> None:
    engine = create_engine(db_url, application_name="relay-worker", pool_size=1)
    nc = await connect(nats_url, name="relay-worker")
    try:
        relay = OutboxRelay(engine, nc.jetstream(), prefix=prefix, batch_size=batch)
        while await relay.run_once():
            pass
    finally:
        await nc.close()
        await engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    db, nats_url, nats_prefix = sys.argv[1:4]
    asyncio.run(main(db, nats_url, nats_prefix, int(sys.argv[4]) if len(sys.argv) > 4 else 100))
