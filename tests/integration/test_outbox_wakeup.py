"""The relay is woken by the commit that adds an outbox row (Postgres NOTIFY, delivered only
on commit), so events leave long before the poll interval; a rolled-back row wakes nobody."""

from __future__ import annotations

import asyncio
import time

from mppo.devstack import Infra
from mppo.group.v1 import group_events_pb2
from mppo.platform.db import create_engine
from mppo.platform.event_types import new_event
from mppo.platform.messaging import connect, ensure_streams, stream_name, subject_for
from mppo.platform.outbox import OutboxRelay, add_to_outbox
from mppo.platform.schema import create_platform_tables


async def test_commit_wakes_the_relay_well_before_its_poll_interval(
    infra: Infra, fresh_database: str, nats_prefix: str
) -> None:
    engine = create_engine(fresh_database)
    nc = await connect(infra.nats_url)
    js = nc.jetstream()
    relay = OutboxRelay(engine, js, prefix=nats_prefix, poll_interval=60.0)
    task: asyncio.Task[None] | None = None
    try:
        async with engine.begin() as conn:
            await conn.run_sync(create_platform_tables)
        await ensure_streams(js, nats_prefix)
        stream = stream_name("MPPO_GROUP", nats_prefix)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.5)  # let the relay finish its first (empty) round and LISTEN

        async def count() -> int:
            return int((await js.stream_info(stream)).state.messages)

        # a rolled-back transaction's NOTIFY is never delivered
        async with engine.connect() as conn:
            tx = await conn.begin()
            await add_to_outbox(conn, new_event("g0", group_events_pb2.GroupCreated(group_id="g0")))
            await tx.rollback()

        arrivals = await nc.subscribe(subject_for("group.created", nats_prefix))
        started = time.monotonic()
        async with engine.begin() as conn:
            await add_to_outbox(conn, new_event("g1", group_events_pb2.GroupCreated(group_id="g1")))
        await arrivals.next_msg(timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"relay waited {elapsed:.1f}s: not woken by the commit"
        await asyncio.sleep(0.5)
        assert await count() == 1  # only the committed event was published
    finally:
        relay.stop()
        if task is not None:
            await asyncio.wait_for(task, 10)
        await nc.close()
        await engine.dispose()
