"""Idempotency keys against a real Postgres: replays, reuse with other parameters, races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google.protobuf import wrappers_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mppo.platform.db import create_engine
from mppo.platform.errors import FailedPreconditionError, InvalidArgumentError
from mppo.platform.idempotency import IdempotencyKey, claim, complete, fingerprint, key_for
from mppo.platform.schema import create_platform_tables


@pytest_asyncio.fixture(loop_scope="session")
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(fresh_database, pool_size=12, max_overflow=0)
    async with eng.begin() as conn:
        await conn.run_sync(create_platform_tables)
        await conn.execute(text("CREATE TABLE effects (id serial PRIMARY KEY, note text)"))
    yield eng
    await eng.dispose()


def make_key(value: str, amount: int) -> IdempotencyKey:
    request = wrappers_pb2.Int64Value(value=amount)
    return IdempotencyKey("CreatePaymentIntent:user-1", value, fingerprint(request))


async def call_once(engine: AsyncEngine, key: IdempotencyKey, note: str) -> bytes:
    """What a mutating RPC does: claim, apply the effect, store the response, commit."""
    async with engine.begin() as conn:
        stored = await claim(conn, key)
        if stored is not None:
            return stored
        await asyncio.sleep(0.05)  # work in progress while duplicates arrive
        await conn.execute(text("INSERT INTO effects (note) VALUES (:n)"), {"n": note})
        response = f"response-for-{note}".encode()
        await complete(conn, key, response)
        return response


async def effects(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM effects"))).scalar_one())


async def test_replay_returns_the_first_response_without_a_second_effect(
    engine: AsyncEngine,
) -> None:
    key = make_key("k-1", 500)
    first = await call_once(engine, key, "first")
    again = await call_once(engine, key, "second")
    assert first == again == b"response-for-first"
    assert await effects(engine) == 1


async def test_same_key_with_other_parameters_is_rejected(engine: AsyncEngine) -> None:
    await call_once(engine, make_key("k-2", 500), "a")
    with pytest.raises(FailedPreconditionError) as caught:
        await call_once(engine, make_key("k-2", 501), "b")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert await effects(engine) == 1


async def test_ten_concurrent_duplicates_apply_one_effect(engine: AsyncEngine) -> None:
    key = make_key("k-3", 700)
    results = await asyncio.gather(*(call_once(engine, key, f"n{i}") for i in range(10)))
    assert len(set(results)) == 1
    assert await effects(engine) == 1


async def test_a_rolled_back_first_call_leaves_the_key_free(engine: AsyncEngine) -> None:
    key = make_key("k-4", 900)
    async with engine.connect() as conn:
        transaction = await conn.begin()
        assert await claim(conn, key) is None
        await transaction.rollback()  # the effect failed
    assert await call_once(engine, key, "retry") == b"response-for-retry"
    assert await effects(engine) == 1


def test_key_comes_from_metadata_and_is_validated() -> None:
    request = wrappers_pb2.Int64Value(value=1)
    key = key_for([("Idempotency-Key", "abc")], "Open", "u1", request)
    assert key == IdempotencyKey("Open:u1", "abc", fingerprint(request))
    assert key_for([("other", "x")], "Open", "u1", request) is None
    with pytest.raises(InvalidArgumentError):
        key_for([("idempotency-key", "x" * 300)], "Open", "u1", request)
