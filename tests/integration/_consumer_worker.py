"""Subprocess helper: run an EventConsumer whose handler records each event in ``effects``.

Usage: ``python _consumer_worker.py DB_URL NATS_URL PREFIX DURABLE ACK_WAIT``; stops on SIGTERM.
With ``MPPO_FAULT=consumer_after_commit`` it dies (exit 137) after its first commit, before the
ack.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from sqlalchemy import text

from mppo.group.v1 import group_events_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.inbox import EventConsumer
from mppo.platform.messaging import connect
from mppo.platform.unit_of_work import UnitOfWork


async def record_effect(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
    event = uow.event
    assert event is not None
    await uow.session.execute(
        text("INSERT INTO effects (event_id, aggregate_id) VALUES (:e, :a)"),
        {"e": event.event_id, "a": event.aggregate_id},
    )


async def main(db_url: str, nats_url: str, prefix: str, durable: str, ack_wait: float) -> None:
    engine = create_engine(db_url, application_name="consumer-worker", pool_size=1)
    nc = await connect(nats_url, name="consumer-worker")
    sessions = create_sessionmaker(engine)
    consumer = EventConsumer(
        nc.jetstream(),
        uow=lambda: UnitOfWork(sessions),
        durable=durable,
        stream="MPPO_GROUP",
        handlers={group_events_pb2.GroupCreated: record_effect},
        prefix=prefix,
        ack_wait=ack_wait,
        fetch_timeout=0.5,
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.stop)
    try:
        await consumer.run()
    finally:
        await nc.close()
        await engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    db, nats_url, nats_prefix, durable_name, wait = sys.argv[1:6]
    asyncio.run(main(db, nats_url, nats_prefix, durable_name, float(wait)))
