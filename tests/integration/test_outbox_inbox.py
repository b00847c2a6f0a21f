"""Outbox relay and idempotent consumers against real Postgres and NATS JetStream.

Crashes are real: worker subprocesses die with ``os._exit(137)`` at the named fault points
(``MPPO_FAULT``). Every wait is bounded so a broken feature fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mppo.group.v1 import group_events_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.event_types import new_event
from mppo.platform.events import Event
from mppo.platform.inbox import (
    HEADER_DEAD_LETTER_CONSUMER,
    HEADER_DEAD_LETTER_REASON,
    EventConsumer,
)
from mppo.platform.messaging import (
    connect,
    dlq_subject,
    ensure_streams,
    publish,
    publish_event,
    stream_name,
)
from mppo.platform.migrations import upgrade_head
from mppo.platform.outbox import FAULT_ENV, OutboxRelay
from mppo.platform.schema import inbox, outbox
from mppo.platform.unit_of_work import UnitOfWork

HERE = Path(__file__).parent
REPO = HERE.parent.parent
GROUP_STREAM = "MPPO_GROUP"
WAIT = 30.0  # upper bound for any single wait in these tests

ENV_PY = """
from mppo.platform.migrations import run_migrations_online

run_migrations_online(None)
"""

VERSION_PY = '''
"""platform tables and the test's effects table"""
import sqlalchemy as sa
from alembic import op

from mppo.platform.schema import create_platform_tables

revision = "0001"
down_revision = None


def upgrade() -> None:
    create_platform_tables(op.get_bind())
    op.create_table(
        "effects",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),  # deliberately not unique
        sa.Column("aggregate_id", sa.Text, nullable=False),
    )
'''


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def migrations_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("migrations")
    (root / "versions").mkdir()
    (root / "env.py").write_text(ENV_PY)
    (root / "versions" / "0001_init.py").write_text(VERSION_PY)
    return root


@pytest.fixture
async def db_url(fresh_database: str, migrations_dir: Path) -> str:
    await asyncio.wait_for(upgrade_head(migrations_dir, fresh_database), WAIT)
    return fresh_database


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url, application_name="test")
    yield eng
    await eng.dispose()


@pytest.fixture
async def nc(infra: Any) -> AsyncIterator[Client]:
    client = await connect(infra.nats_url, name="test")
    yield client
    await client.close()


@pytest.fixture
async def js(nc: Client, nats_prefix: str) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_streams(context, nats_prefix)
    return context


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


async def scalar(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def stream_msgs(js: JetStreamContext, prefix: str, base: str = GROUP_STREAM) -> int:
    info = await js.stream_info(stream_name(base, prefix))
    return info.state.messages


async def consumer_info(js: JetStreamContext, prefix: str, durable: str) -> ConsumerInfo:
    info: ConsumerInfo = await js.consumer_info(stream_name(GROUP_STREAM, prefix), durable)
    return info


async def consumer_drained(js: JetStreamContext, prefix: str, durable: str) -> bool:
    try:
        info = await consumer_info(js, prefix, durable)
    except nats.js.errors.NotFoundError:
        return False  # not created yet
    return info.num_pending == 0 and info.num_ack_pending == 0


def make_event(aggregate_id: str) -> Event:
    return new_event(aggregate_id, group_events_pb2.GroupCreated(group_id=aggregate_id))


async def write_events(engine: AsyncEngine, events: list[Event]) -> None:
    async with UnitOfWork(create_sessionmaker(engine)) as uow:
        uow.collect(*events)
        await uow.commit()


async def record(session: AsyncSession, event: Event) -> None:
    await session.execute(
        text("INSERT INTO effects (event_id, aggregate_id) VALUES (:e, :a)"),
        {"e": event.event_id, "a": event.aggregate_id},
    )


def applied(uow: UnitOfWork) -> Event:
    """The envelope of the event a consumer is applying."""
    assert uow.event is not None
    return uow.event


async def record_effect(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
    assert message.group_id == applied(uow).aggregate_id  # the typed payload of that event
    await record(uow.session, applied(uow))


def worker_env(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if fault:
        env[FAULT_ENV] = fault
    return env


@contextlib.asynccontextmanager
async def worker(
    script: str, *args: str, fault: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / script),
        *args,
        env=worker_env(fault),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def exit_code(proc: asyncio.subprocess.Process, limit: float = WAIT) -> int:
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        pytest.fail("worker process did not exit in time")
    assert proc.returncode is not None
    if proc.returncode not in (0, 137, -signal.SIGTERM):
        pytest.fail(f"worker failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    return proc.returncode


@contextlib.asynccontextmanager
async def running(*consumers: EventConsumer) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        yield
    finally:
        for c in consumers:
            c.stop()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        assert not pending, "consumer did not stop in time"


def consumer(
    engine: AsyncEngine,
    js: JetStreamContext,
    prefix: str,
    durable: str,
    handler: Callable[[Any, UnitOfWork], Awaitable[None]] = record_effect,
    **options: Any,
) -> EventConsumer:
    sessions = create_sessionmaker(engine)
    return EventConsumer(
        js,
        uow=lambda: UnitOfWork(sessions),
        durable=durable,
        stream=GROUP_STREAM,
        handlers={group_events_pb2.GroupCreated: handler},
        prefix=prefix,
        fetch_timeout=0.5,
        **options,
    )


# --------------------------------------------------------------------------- (a) relay crash


async def test_relay_crash_after_publish_is_applied_exactly_once(
    db_url: str, engine: AsyncEngine, js: JetStreamContext, nats_prefix: str, infra: Any
) -> None:
    events = [make_event(f"g-{i}") for i in range(5)]
    await write_events(engine, events)
    relay_args = (db_url, infra.nats_url, nats_prefix, "100")

    async with worker("_relay_worker.py", *relay_args, fault="relay_after_publish") as proc:
        assert await exit_code(proc) == 137
    # Published but never marked: the row is still due, and JetStream holds one copy.
    assert await stream_msgs(js, nats_prefix) == 1
    assert await scalar(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 5

    async with worker("_relay_worker.py", *relay_args) as proc:
        assert await exit_code(proc) == 0
    assert await scalar(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert await stream_msgs(js, nats_prefix) == 5  # the republish was de-duplicated

    async with running(consumer(engine, js, nats_prefix, "test-effects")):
        await wait_until(
            lambda: consumer_drained(js, nats_prefix, "test-effects"), "the consumer to drain"
        )
        assert await scalar(engine, "SELECT count(*) FROM effects") == 5

        # De-duplication cannot help (window passed, or another msg id): the inbox still does.
        first = events[0]
        headers = first.to_headers() | {"Nats-Msg-Id": str(uuid.uuid4())}
        await publish(js, f"{nats_prefix}.group.created", first.payload, headers)
        assert await stream_msgs(js, nats_prefix) == 6

        async def redelivery_acked() -> bool:
            info = await consumer_info(js, nats_prefix, "test-effects")
            return info.ack_floor is not None and info.ack_floor.stream_seq == 6

        await wait_until(redelivery_acked, "the duplicate to be acked")

    assert await scalar(engine, "SELECT count(*) FROM effects") == 5
    assert await scalar(engine, "SELECT count(DISTINCT event_id) FROM effects") == 5
    assert await scalar(engine, "SELECT count(*) FROM inbox") == 5


# --------------------------------------------------------------------------- (b) consumer crash


async def test_consumer_crash_after_commit_before_ack_is_applied_exactly_once(
    db_url: str, engine: AsyncEngine, js: JetStreamContext, nats_prefix: str, infra: Any
) -> None:
    for i in range(3):
        await publish_event(js, make_event(f"g-{i}"), nats_prefix)
    args = (db_url, infra.nats_url, nats_prefix, "crashy", "1.0")

    async with worker("_consumer_worker.py", *args, fault="consumer_after_commit") as proc:
        assert await exit_code(proc) == 137
    assert await scalar(engine, "SELECT count(*) FROM effects") == 1  # committed, never acked
    info = await consumer_info(js, nats_prefix, "crashy")
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq == 0

    async with worker("_consumer_worker.py", *args) as proc:
        await wait_until(lambda: consumer_drained(js, nats_prefix, "crashy"), "redelivery + ack")
        proc.send_signal(signal.SIGTERM)
        assert await exit_code(proc) in (0, -signal.SIGTERM)

    assert await scalar(engine, "SELECT count(*) FROM effects") == 3
    assert await scalar(engine, "SELECT count(DISTINCT event_id) FROM effects") == 3
    info = await consumer_info(js, nats_prefix, "crashy")
    assert info.delivered is not None
    assert info.delivered.consumer_seq > 3  # there was a redelivery
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


# --------------------------------------------------------------------------- (c) poison message


async def test_poison_message_is_dead_lettered_and_the_rest_flows(
    engine: AsyncEngine, js: JetStreamContext, nats_prefix: str
) -> None:
    attempts: dict[str, int] = {}

    async def handler(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
        event = applied(uow)
        attempts[event.aggregate_id] = attempts.get(event.aggregate_id, 0) + 1
        if event.aggregate_id == "poison":
            raise RuntimeError("cannot digest this")
        await record(uow.session, event)

    poison = make_event("poison")
    for event in [make_event("ok-1"), poison, make_event("ok-2")]:
        await publish_event(js, event, nats_prefix)
    garbage_id = str(uuid.uuid4())  # no Mppo-* headers: dead-lettered at once
    await publish(js, f"{nats_prefix}.group.created", b"?", {"Nats-Msg-Id": garbage_id})
    await publish_event(js, make_event("ok-3"), nats_prefix)

    sick = consumer(
        engine, js, nats_prefix, "test-poison", handler, max_deliver=3, nak_backoff=0.05
    )
    async with running(sick):
        await wait_until(lambda: consumer_drained(js, nats_prefix, "test-poison"), "drain")

    assert attempts == {"ok-1": 1, "poison": 3, "ok-2": 1, "ok-3": 1}
    assert await scalar(engine, "SELECT count(*) FROM effects") == 3
    async with engine.connect() as conn:
        recorded = (await conn.execute(select(inbox.c.event_id))).scalars().all()
    assert poison.event_id not in recorded  # the failed transaction left no inbox row

    dead = await js.get_last_msg(
        stream_name("MPPO_DLQ", nats_prefix),
        dlq_subject("test-poison", "group.created", nats_prefix),
    )
    assert dead.headers is not None
    assert dead.headers["Mppo-Event-Id"] == poison.event_id
    assert dead.headers[HEADER_DEAD_LETTER_CONSUMER] == "test-poison"
    assert "cannot digest this" in dead.headers[HEADER_DEAD_LETTER_REASON]
    assert dead.data == poison.payload

    malformed = await js.get_last_msg(
        stream_name("MPPO_DLQ", nats_prefix), dlq_subject("test-poison", "unknown", nats_prefix)
    )
    assert malformed.headers is not None
    assert "missing header" in malformed.headers[HEADER_DEAD_LETTER_REASON]
    assert await stream_msgs(js, nats_prefix, "MPPO_DLQ") == 2


# --------------------------------------------------------------------------- concurrency


async def test_two_relays_publish_each_row_exactly_once(
    db_url: str, engine: AsyncEngine, js: JetStreamContext, nats_prefix: str, infra: Any
) -> None:
    n = 120
    await write_events(engine, [make_event(f"g-{i}") for i in range(n)])

    async def relay_loop() -> int:
        eng = create_engine(db_url, application_name="relay")
        conn = await connect(infra.nats_url)
        total = 0
        try:
            relay = OutboxRelay(eng, conn.jetstream(), prefix=nats_prefix, batch_size=7)
            while True:
                published = await relay.run_once()
                total += published
                if published == 0:
                    due = await scalar(
                        eng, "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                    )
                    if due == 0:
                        return total
                    await asyncio.sleep(0.01)
        finally:
            await conn.close()
            await eng.dispose()

    counts = await asyncio.wait_for(asyncio.gather(relay_loop(), relay_loop()), WAIT)

    assert sum(counts) == n  # no row was published twice, even before de-duplication
    assert all(c > 0 for c in counts), counts  # both relays really took part
    assert await stream_msgs(js, nats_prefix) == n
    async with engine.connect() as conn:
        attempts = (await conn.execute(select(func.max(outbox.c.attempts)))).scalar_one()
    assert attempts == 1


async def test_a_lone_event_is_handled_when_it_arrives_not_when_a_batch_fills(
    engine: AsyncEngine, js: JetStreamContext, nats_prefix: str
) -> None:
    # A quiet system: the consumer is already waiting when one event is published. It must
    # be applied at once, not after the fetch window (10 s here) waiting for a full batch;
    # and stop() must not wait that window out either.
    handled = asyncio.Event()

    async def handler(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
        await record(uow.session, applied(uow))
        uow.after_commit(handled.set)

    lone = consumer(engine, js, nats_prefix, "test-lone", handler, batch=10)
    lone._fetch_timeout = 10.0  # the window a batch-of-10 fetch would otherwise wait out
    async with running(lone):
        await asyncio.sleep(1.0)  # subscribed and lingering on an empty stream
        for round_ in range(3):
            handled.clear()
            started = time.monotonic()
            await publish_event(js, make_event(f"lone-{round_}"), nats_prefix)
            await asyncio.wait_for(handled.wait(), 8)
            assert time.monotonic() - started < 3, "waited for a batch to fill"
    assert await scalar(engine, "SELECT count(*) FROM effects") == 3


async def test_two_consumers_sharing_a_durable_apply_each_event_once(
    engine: AsyncEngine, js: JetStreamContext, nats_prefix: str, db_url: str
) -> None:
    n = 60
    handled = [0, 0]

    def counting(index: int) -> Callable[[Any, UnitOfWork], Awaitable[None]]:
        async def handler(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
            handled[index] += 1
            await record(uow.session, applied(uow))
            await asyncio.sleep(0.005)

        return handler

    other = create_engine(db_url, application_name="replica-2")
    try:
        replicas = [
            consumer(engine, js, nats_prefix, "test-shared", counting(0), batch=5),
            consumer(other, js, nats_prefix, "test-shared", counting(1), batch=5),
        ]
        async with running(*replicas):
            await asyncio.sleep(0.3)  # both replicas bind before the burst
            for i in range(n):
                await publish_event(js, make_event(f"g-{i}"), nats_prefix)
            await wait_until(lambda: consumer_drained(js, nats_prefix, "test-shared"), "drain")
    finally:
        await other.dispose()

    assert await scalar(engine, "SELECT count(*) FROM effects") == n
    assert await scalar(engine, "SELECT count(DISTINCT event_id) FROM effects") == n
    assert sum(handled) == n
    assert all(handled), handled


# --------------------------------------------------------------------------- db plumbing


async def test_unit_of_work_writes_state_and_events_atomically(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    kept, dropped = make_event("g-kept"), make_event("g-dropped")

    async with UnitOfWork(sessions) as uow:
        await record(uow.session, dropped)
        uow.collect(dropped)
        # no commit: both the state change and the event vanish

    async def failing() -> None:
        async with UnitOfWork(sessions) as uow:
            await record(uow.session, dropped)
            uow.collect(dropped)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing()

    async with UnitOfWork(sessions) as uow:
        await record(uow.session, kept)
        uow.collect(kept)
        await uow.commit()

    async with engine.connect() as conn:
        ids = (await conn.execute(select(outbox.c.event_id, outbox.c.headers))).all()
    assert [str(i.event_id) for i in ids] == [kept.event_id]
    assert ids[0].headers == kept.to_headers()
    assert await scalar(engine, "SELECT count(*) FROM effects") == 1


async def test_session_settings_survive_pool_release(db_url: str) -> None:
    eng = create_engine(db_url, application_name="svc-x", pool_size=1, max_overflow=0)
    try:
        for _ in range(2):  # the second round reuses the pooled connection after RESET ALL
            async with eng.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT current_setting('application_name'),"
                            " current_setting('statement_timeout'),"
                            " current_setting('TimeZone')"
                        )
                    )
                ).one()
            assert tuple(row) == ("svc-x", "30s", "UTC")
    finally:
        await eng.dispose()


# --------------------------------------------------------------------------- failures


async def test_unpublishable_row_records_the_error_and_stays_due(
    engine: AsyncEngine, js: JetStreamContext, nats_prefix: str
) -> None:
    stray = Event.create("nowhere.happened", "x-1", StringValue())  # no stream takes it
    good = make_event("g-1")
    await write_events(engine, [stray, good])

    relay = OutboxRelay(engine, js, prefix=nats_prefix, publish_timeout=0.5)
    assert await asyncio.wait_for(relay.run_once(), WAIT) == 1

    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.event_id == stray.event_id))).one()
    assert row.published_at is None
    assert row.attempts == 1
    assert row.last_error
    assert await stream_msgs(js, nats_prefix) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("nats-server binary not available")
    return subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_nats(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_for_port(port: int) -> None:
    async def accepting() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(accepting, f"nats on port {port}", limit=15)


async def has_effects(engine: AsyncEngine, count: int) -> bool:
    return await scalar(engine, "SELECT count(*) FROM effects") >= count


async def test_consumer_and_publisher_survive_a_nats_restart(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    port = free_port()
    server = start_nats(port, tmp_path)
    try:
        await wait_for_port(port)
        client = await connect(f"nats://127.0.0.1:{port}")
        try:
            js = client.jetstream()
            await ensure_streams(js)
            async with running(consumer(engine, js, "", "test-restart", stale_check_after=2)):
                await publish_event(js, make_event("before"))
                await wait_until(lambda: has_effects(engine, 1), "the first event")

                stop_nats(server)
                server = start_nats(port, tmp_path)
                await wait_for_port(port)
                await publish_event(js, make_event("after"))  # retried while reconnecting
                await wait_until(lambda: has_effects(engine, 2), "the event after the restart")
                await wait_until(lambda: consumer_drained_on(js, "test-restart"), "drain")

                # The consumer disappears under a live subscription (e.g. a server restarted
                # without its store): it is noticed, recreated and re-subscribed; the stream is
                # replayed from the start and the inbox turns the replays into no-ops.
                await js.delete_consumer(GROUP_STREAM, "test-restart")
                await publish_event(js, make_event("after-loss"))
                await wait_until(lambda: has_effects(engine, 3), "the event after the loss")
                await wait_until(lambda: consumer_drained_on(js, "test-restart"), "replay")
        finally:
            await client.close()
    finally:
        stop_nats(server)
    assert await scalar(engine, "SELECT count(*) FROM effects") == 3
    assert await scalar(engine, "SELECT count(DISTINCT event_id) FROM effects") == 3


async def consumer_drained_on(js: JetStreamContext, durable: str) -> bool:
    return await consumer_drained(js, "", durable)
