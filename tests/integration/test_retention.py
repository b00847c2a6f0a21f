"""Retention against real Postgres and NATS JetStream, with windows of seconds.

The pruner deletes what is past its window and keeps what is not; a duplicate of an event
older than the inbox window cannot reach a consumer because the stream (max_age shorter than
the inbox window) no longer holds it, while one inside the window is still deduplicated; an
idempotent retry inside the window gets the first result; two pruners share the work without
errors; the streams' limits are applied to existing streams idempotently, and a full stream
refuses publishes (discard new) while the outbox keeps the events; a real service runs the
pruner (with the payment service's own target) and refuses an unsafe inbox window at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
import pytest_asyncio
from google.protobuf import wrappers_pb2
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mppo.devstack import Infra
from mppo.group.v1 import group_events_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.event_types import new_event
from mppo.platform.events import Event
from mppo.platform.idempotency import IdempotencyKey, claim, complete, fingerprint
from mppo.platform.inbox import EventConsumer
from mppo.platform.messaging import (
    STREAMS,
    StreamLimits,
    connect,
    ensure_streams,
    publish_event,
    stream_name,
    subject_for,
)
from mppo.platform.outbox import OutboxRelay
from mppo.platform.retention import (
    DUPLICATE_WINDOW_VAR,
    INBOX_VAR,
    STREAM_MAX_AGE_VAR,
    Pruner,
    PruneTarget,
    RetentionSettings,
    platform_targets,
)
from mppo.platform.schema import create_platform_tables
from mppo.platform.unit_of_work import UnitOfWork
from tests.support.services import SERVING, start_service, wait_for_status

GROUP_STREAM = "MPPO_GROUP"
WAIT = 30.0


# --------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(loop_scope="session")
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(fresh_database, application_name="test-retention")
    async with eng.begin() as conn:
        await conn.run_sync(create_platform_tables)
        await conn.execute(
            text("CREATE TABLE effects (id serial PRIMARY KEY, event_id text, note text)")
        )
        await conn.execute(
            text(
                "CREATE TABLE provider_records (id serial PRIMARY KEY, outcome text NOT NULL,"
                " received_at timestamptz NOT NULL DEFAULT now())"
            )
        )
    yield eng
    await eng.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def nc(infra: Infra) -> AsyncIterator[Client]:
    client = await connect(infra.nats_url, name="test-retention")
    yield client
    await client.close()


# --------------------------------------------------------------------------- helpers


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], what: str, limit: float = WAIT
) -> None:
    async def poll() -> None:
        while not await predicate():  # noqa: ASYNC110 - polling real state
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(poll(), limit)
    except TimeoutError:
        pytest.fail(f"timed out after {limit}s waiting for {what}")


def holds(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """An in-memory condition as a predicate for :func:`wait_until`."""

    async def check() -> bool:
        return condition()

    return check


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


@contextlib.asynccontextmanager
async def running(*workers: Any) -> AsyncIterator[None]:
    """Run LoopWorkers / consumers as tasks; stop them and surface a crash at the end."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            w.stop()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        assert not pending, "a worker did not stop in time"
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc


def make_event(aggregate_id: str) -> Event:
    return new_event(aggregate_id, group_events_pb2.GroupCreated(group_id=aggregate_id))


async def record_effect(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
    assert uow.event is not None
    await uow.session.execute(
        text("INSERT INTO effects (event_id, note) VALUES (:e, 'applied')"),
        {"e": uow.event.event_id},
    )


def make_consumer(engine: AsyncEngine, js: JetStreamContext, prefix: str) -> EventConsumer:
    sessions = create_sessionmaker(engine)
    return EventConsumer(
        js,
        uow=lambda: UnitOfWork(sessions),
        durable="retention-effects",
        stream=GROUP_STREAM,
        handlers={group_events_pb2.GroupCreated: record_effect},
        prefix=prefix,
        fetch_timeout=0.3,
    )


async def stream_messages(js: JetStreamContext, prefix: str) -> int:
    return int((await js.stream_info(stream_name(GROUP_STREAM, prefix))).state.messages)


# --------------------------------------------------------------------------- tables


async def test_rows_past_their_window_are_gone_and_rows_inside_are_kept(
    engine: AsyncEngine,
) -> None:
    settings = RetentionSettings(
        outbox=timedelta(seconds=2),
        inbox=timedelta(seconds=4),
        idempotency=timedelta(seconds=3),
    )
    extra = PruneTarget(
        "provider_records", "received_at", timedelta(seconds=3), "outcome = 'final'"
    )
    old, recent = "now() - interval '1 hour'", "now()"
    for n, (published, occurred) in enumerate(
        [(old, old), (recent, recent), ("NULL", old), ("NULL", recent)]
    ):
        await execute(
            engine,
            "INSERT INTO outbox (event_id, event_type, subject, aggregate_id, payload, headers,"
            f" occurred_at, published_at) VALUES (:id, 'group.created', 'group.created', :agg,"
            f" '\\x00'::bytea, '{{}}'::jsonb, {occurred}, {published})",
            id=str(uuid.uuid4()),
            agg=f"g-{n}",
        )
    for when, name in ((old, "old"), (recent, "recent")):
        await execute(
            engine,
            "INSERT INTO inbox (consumer, event_id, event_type, processed_at)"
            f" VALUES ('c', :e, 'group.created', {when})",
            e=name,
        )
    for name, status, when in (
        ("old-done", "completed", old),
        ("old-started", "started", old),
        ("recent-done", "completed", recent),
    ):
        await execute(
            engine,
            "INSERT INTO idempotency_keys (scope, key, request_hash, response, status, created_at)"
            f" VALUES ('Op:u', :k, 'h', 'r'::bytea, :s, {when})",
            k=name,
            s=status,
        )
    for outcome, when in (("final", old), ("open", old), ("final", recent)):
        await execute(
            engine,
            f"INSERT INTO provider_records (outcome, received_at) VALUES (:o, {when})",
            o=outcome,
        )

    pruner = Pruner(engine, [*platform_targets(settings), extra], batch=10, interval=0.2)
    async with running(pruner):
        await wait_until(holds(lambda: pruner.cycles >= 1), "a first complete pruning cycle")
        assert pruner.last_cycle == {
            "outbox": 1,
            "inbox": 1,
            "idempotency_keys": 1,
            "provider_records": 1,
        }
        # inside their windows: kept; never due (unpublished, started, not final): kept
        assert await scalar(engine, "SELECT count(*) FROM outbox") == 3
        assert await scalar(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 2
        assert await scalar(engine, "SELECT count(*) FROM inbox WHERE event_id = 'recent'") == 1
        assert await scalar(engine, "SELECT count(*) FROM idempotency_keys") == 2
        assert await scalar(engine, "SELECT count(*) FROM provider_records") == 2

        # seconds later the recent rows have aged out too, while the others stay
        await wait_until(
            holds(lambda: sum(pruner.pruned.values()) >= 8),
            "the recent rows to pass their windows",
        )
    assert dict(pruner.pruned) == {
        "outbox": 2,
        "inbox": 2,
        "idempotency_keys": 2,
        "provider_records": 2,
    }
    assert await scalar(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 2
    assert await scalar(engine, "SELECT count(*) FROM outbox") == 2
    assert await scalar(engine, "SELECT count(*) FROM inbox") == 0
    assert await scalar(engine, "SELECT count(*) FROM idempotency_keys") == 1  # started
    assert await scalar(engine, "SELECT count(*) FROM provider_records") == 1  # open
    assert pruner.failed_rounds == 0
    metrics = pruner.metrics()
    assert metrics["rows_pruned_total"]["outbox"] == 2
    assert metrics["table_bytes"]["outbox"] > 0


async def test_two_pruners_share_the_work_without_errors(
    engine: AsyncEngine, fresh_database: str
) -> None:
    rows = 3000
    await execute(
        engine,
        "INSERT INTO outbox (event_id, event_type, subject, aggregate_id, payload, headers,"
        " occurred_at, published_at) SELECT gen_random_uuid(), 'group.created', 'group.created',"
        " 'g-' || i, '\\x00'::bytea, '{}'::jsonb, now() - interval '2 hours',"
        " now() - interval '1 hour' FROM generate_series(1, :n) AS i",
        n=rows,
    )
    await execute(
        engine,
        "INSERT INTO inbox (consumer, event_id, event_type, processed_at)"
        " SELECT 'c', 'e-' || i, 'group.created', now() - interval '1 hour'"
        " FROM generate_series(1, :n) AS i",
        n=rows,
    )
    settings = RetentionSettings(outbox=timedelta(seconds=1), inbox=timedelta(seconds=5))
    other = create_engine(fresh_database, application_name="test-retention-replica")
    try:
        replicas = [
            Pruner(eng, platform_targets(settings), batch=50, interval=0.2, pause=0)
            for eng in (engine, other)
        ]

        async def all_gone() -> bool:
            return (
                await scalar(engine, "SELECT count(*) FROM outbox")
                + await scalar(engine, "SELECT count(*) FROM inbox")
                == 0
            )

        async with running(*replicas):
            await wait_until(all_gone, "both tables to be pruned")
    finally:
        await other.dispose()
    for table in ("outbox", "inbox"):
        assert sum(p.pruned[table] for p in replicas) == rows, table  # each row exactly once
    assert [p.failed_rounds for p in replicas] == [0, 0]


# --------------------------------------------------------------------------- inbox vs stream


async def test_a_duplicate_older_than_the_inbox_window_cannot_reach_the_consumer(
    engine: AsyncEngine, nc: Client, nats_prefix: str
) -> None:
    max_age, duplicate_window, inbox_window = 4.0, 1.0, 6.0
    env = {
        "MPPO_ENV": "test",
        STREAM_MAX_AGE_VAR: str(max_age),
        DUPLICATE_WINDOW_VAR: str(duplicate_window),
        INBOX_VAR: str(inbox_window),
    }
    settings = RetentionSettings.from_env(env)  # the combination the config accepts
    js = nc.jetstream()
    await ensure_streams(js, nats_prefix, limits=settings.streams)
    pruner = Pruner(engine, platform_targets(settings), interval=0.2)

    async def effects_of(event: Event) -> int:
        return await scalar(
            engine, "SELECT count(*) FROM effects WHERE event_id = :e", e=event.event_id
        )

    async def inbox_has(event: Event) -> bool:
        count = await scalar(
            engine, "SELECT count(*) FROM inbox WHERE event_id = :e", e=event.event_id
        )
        return count == 1

    async def drained() -> bool:
        try:
            info = await js.consumer_info(
                stream_name(GROUP_STREAM, nats_prefix), "retention-effects"
            )
        except nats.js.errors.NotFoundError:
            return False
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    first = make_event("g-old")
    async with running(make_consumer(engine, js, nats_prefix), pruner):
        await publish_event(js, first, nats_prefix)
        await wait_until(lambda: inbox_has(first), "the event to be applied")

        # inside the inbox window: a republish after the duplicate window is stored again
        # (JetStream cannot tell) and delivered, and the inbox absorbs it
        await asyncio.sleep(duplicate_window + 0.2)
        ack = await publish_event(js, first, nats_prefix)
        assert not ack.duplicate
        await wait_until(drained, "the republished copy to be delivered and acked")
        assert await effects_of(first) == 1

        # the inbox row goes only after the stream has dropped every copy of the event
        await wait_until(
            holds(lambda: pruner.pruned["inbox"] >= 1),
            "the inbox row to pass its window",
            limit=WAIT,
        )
        assert not await inbox_has(first)
        assert await stream_messages(js, nats_prefix) == 0

    # a replay of the whole stream (a consumer created anew) finds nothing to deliver
    await js.delete_consumer(stream_name(GROUP_STREAM, nats_prefix), "retention-effects")
    second = make_event("g-recent")
    async with running(make_consumer(engine, js, nats_prefix)):
        await publish_event(js, second, nats_prefix)
        await wait_until(lambda: inbox_has(second), "a newer event to be applied")
        await wait_until(drained, "the new consumer to be drained")
        info = await js.consumer_info(stream_name(GROUP_STREAM, nats_prefix), "retention-effects")
        assert info.delivered.consumer_seq == 1  # only the newer event: the old one is gone
        assert await effects_of(first) == 1

        # inside the window a replay delivers it again: deduplicated by the inbox
        started = time.monotonic()
        await js.delete_consumer(stream_name(GROUP_STREAM, nats_prefix), "retention-effects")
    async with running(make_consumer(engine, js, nats_prefix)):
        await wait_until(drained, "the replay to be delivered and acked")
        assert time.monotonic() - started < max_age, "replay came too late to prove anything"
        info = await js.consumer_info(stream_name(GROUP_STREAM, nats_prefix), "retention-effects")
        assert info.delivered.consumer_seq >= 1  # the newer event was delivered again
    assert await effects_of(second) == 1
    assert await effects_of(first) == 1


# --------------------------------------------------------------------------- idempotency keys


async def test_an_idempotent_retry_inside_the_window_returns_the_first_result(
    engine: AsyncEngine,
) -> None:
    window = 3.0
    settings = RetentionSettings(idempotency=timedelta(seconds=window))
    key = IdempotencyKey("CreateGroup:u1", "k-1", fingerprint(wrappers_pb2.Int64Value(value=5)))

    async def call(note: str) -> bytes:
        async with engine.begin() as conn:
            stored = await claim(conn, key)
            if stored is not None:
                return stored
            await conn.execute(text("INSERT INTO effects (note) VALUES (:n)"), {"n": note})
            response = f"response-{note}".encode()
            await complete(conn, key, response)
            return response

    pruner = Pruner(engine, platform_targets(settings), interval=0.2)
    async with running(pruner):
        first_at = time.monotonic()
        assert await call("first") == b"response-first"
        await asyncio.sleep(1.0)
        assert await call("retry") == b"response-first"
        assert time.monotonic() - first_at < window
        assert await scalar(engine, "SELECT count(*) FROM effects") == 1
        await wait_until(
            holds(lambda: pruner.pruned["idempotency_keys"] >= 1),
            "the key to pass its window",
        )
    assert time.monotonic() - first_at >= window
    # past the window the key is forgotten: the same key is a new call (what the window means)
    assert await call("late") == b"response-late"


# --------------------------------------------------------------------------- streams


async def test_ensure_streams_brings_existing_streams_to_their_limits_idempotently(
    nc: Client, nats_prefix: str
) -> None:
    js = nc.jetstream()
    for base, subjects in STREAMS.items():  # as streams were created before retention
        await js.add_stream(
            StreamConfig(
                name=stream_name(base, nats_prefix),
                subjects=[subject_for(s, nats_prefix) for s in subjects],
                storage=StorageType.FILE,
                duplicate_window=120,
            )
        )
    await publish_event(js, make_event("g-kept"), nats_prefix)
    limits = StreamLimits(
        max_age=3600, duplicate_window=60, max_bytes=1 << 20, dlq_max_bytes=1 << 19
    )
    changed = await ensure_streams(js, nats_prefix, limits=limits)
    assert sorted(changed) == sorted(stream_name(base, nats_prefix) for base in STREAMS)
    for base in STREAMS:
        config = (await js.stream_info(stream_name(base, nats_prefix))).config
        assert config.retention == RetentionPolicy.LIMITS
        assert config.discard == DiscardPolicy.NEW
        assert config.duplicate_window == 60
        if base == "MPPO_DLQ":
            assert (config.max_age, config.max_bytes) == (0, 1 << 19)
        else:
            assert (config.max_age, config.max_bytes) == (3600, 1 << 20)
    assert await stream_messages(js, nats_prefix) == 1  # updating kept the message
    assert await ensure_streams(js, nats_prefix, limits=limits) == []  # nothing to change
    longer = StreamLimits(
        max_age=7200, duplicate_window=60, max_bytes=1 << 20, dlq_max_bytes=1 << 19
    )
    changed = await ensure_streams(js, nats_prefix, limits=longer)
    assert sorted(changed) == sorted(
        stream_name(base, nats_prefix) for base in STREAMS if base != "MPPO_DLQ"
    )


async def test_a_full_stream_refuses_publishes_and_the_outbox_keeps_the_events(
    engine: AsyncEngine, nc: Client, nats_prefix: str
) -> None:
    js = nc.jetstream()
    small = StreamLimits(max_age=3600, duplicate_window=60, max_bytes=4096)
    await ensure_streams(js, nats_prefix, limits=small)
    events = [make_event(f"g-{i}") for i in range(40)]
    async with UnitOfWork(create_sessionmaker(engine)) as uow:
        uow.collect(*events)
        await uow.commit()
    relay = OutboxRelay(engine, js, prefix=nats_prefix, batch_size=100)
    for _ in range(3):
        await relay.run_once()
    stored = await stream_messages(js, nats_prefix)
    info = await js.stream_info(stream_name(GROUP_STREAM, nats_prefix))
    assert 0 < stored < len(events)
    assert info.state.first_seq == 1  # nothing was dropped to make room
    assert info.state.bytes <= 4096
    published = await scalar(engine, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
    assert published == stored
    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM outbox"
            " WHERE published_at IS NULL AND last_error LIKE '%exceeded%'",
        )
        >= 1
    )

    # once there is room again (limit raised, or old events aged out) the rest goes out
    await ensure_streams(js, nats_prefix, limits=StreamLimits(max_age=3600, duplicate_window=60))
    while await relay.run_once():
        pass
    assert await scalar(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert await stream_messages(js, nats_prefix) == len(events)


# --------------------------------------------------------------------------- a real service


async def test_the_payment_service_prunes_its_tables_and_limits_its_streams(
    infra: Infra, fresh_database: str, nats_prefix: str, nc: Client, tmp_path: Path
) -> None:
    env = {
        STREAM_MAX_AGE_VAR: "30",
        DUPLICATE_WINDOW_VAR: "5",
        INBOX_VAR: "40",
        "MPPO_RETENTION_OUTBOX_SECONDS": "20",
        "MPPO_RETENTION_IDEMPOTENCY_SECONDS": "20",
        "MPPO_RETENTION_WEBHOOKS_SECONDS": "50",
        "MPPO_RETENTION_STREAM_MAX_BYTES": str(8 << 20),
        "MPPO_RETENTION_DLQ_MAX_BYTES": str(1 << 20),
        "MPPO_RETENTION_INTERVAL_SECONDS": "0.3",
    }
    proc = start_service(
        "payment",
        database_url=fresh_database,
        redis_url=infra.redis_url,
        nats_url=infra.nats_url,
        nats_prefix=nats_prefix,
        log_dir=tmp_path,
        env=env,
    )
    engine = create_engine(fresh_database, application_name="test-retention-check")
    try:
        status = await wait_for_status(proc.addr, "mppo.payment.v1.PaymentService", SERVING, 30)
        assert status == SERVING, proc.log_text()
        js = nc.jetstream()
        group = (await js.stream_info(stream_name(GROUP_STREAM, nats_prefix))).config
        assert (group.max_age, group.duplicate_window, group.max_bytes) == (30, 5, 8 << 20)
        assert group.discard == DiscardPolicy.NEW
        dlq = (await js.stream_info(stream_name("MPPO_DLQ", nats_prefix))).config
        assert (dlq.max_age, dlq.max_bytes) == (0, 1 << 20)

        old, recent = "now() - interval '2 minutes'", "now()"
        for tag, when in (("old", old), ("recent", recent)):
            await execute(
                engine,
                "INSERT INTO outbox (event_id, event_type, subject, aggregate_id, payload,"
                " headers, occurred_at, published_at) VALUES (gen_random_uuid(),"
                " 'payment.requested', 'payment.requested', :a, '\\x00'::bytea, '{}'::jsonb,"
                f" {when}, {when})",
                a=tag,
            )
            await execute(
                engine,
                "INSERT INTO inbox (consumer, event_id, event_type, processed_at)"
                f" VALUES ('c', :e, 'group.created', {when})",
                e=tag,
            )
            await execute(
                engine,
                "INSERT INTO idempotency_keys (scope, key, request_hash, response, status,"
                f" created_at) VALUES ('Op:u', :k, 'h', 'r'::bytea, 'completed', {when})",
                k=tag,
            )
            await execute(
                engine,
                "INSERT INTO webhook_events (provider, event_id, event_type, outcome, body,"
                f" received_at) VALUES ('sandbox', :e, 'x', 'ignored', '{{}}', {when})",
                e=tag,
            )
        tables = ("outbox", "inbox", "idempotency_keys", "webhook_events")

        async def only_recent_left() -> bool:
            counts = [await scalar(engine, f"SELECT count(*) FROM {t}") for t in tables]
            return counts == [1, 1, 1, 1]

        await wait_until(only_recent_left, "the service's pruner to delete the old rows")
        assert await scalar(engine, "SELECT count(*) FROM webhook_events WHERE event_id = 'recent'")
    finally:
        await engine.dispose()
        code = proc.stop()
    assert code == 0, proc.log_text()
    assert "pruned" in proc.log_text()
    assert "webhook_events=1" in proc.log_text()


async def test_a_service_refuses_to_start_with_an_inbox_window_that_lets_duplicates_through(
    tmp_path: Path,
) -> None:
    proc = start_service(
        "group",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1/0",
        nats_url="nats://127.0.0.1:1",
        nats_prefix="tnever",
        log_dir=tmp_path,
        env={STREAM_MAX_AGE_VAR: "600", DUPLICATE_WINDOW_VAR: "120", INBOX_VAR: "700"},
    )
    try:
        code = await asyncio.to_thread(proc.process.wait, 30)
    finally:
        proc.kill()
    assert code == 2, proc.log_text()
    log = proc.log_text()
    for name in (INBOX_VAR, STREAM_MAX_AGE_VAR, DUPLICATE_WINDOW_VAR):
        assert name in log
