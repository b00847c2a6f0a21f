"""The Redis token bucket: atomic across concurrent takers, refills, separate buckets, and
fails open (with a warning) when Redis does not answer."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.ratelimit import Limit, RateLimiter
from mppo.devstack.probes import free_port


async def test_bucket_allows_the_burst_then_refills(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RateLimiter(client, redis_prefix)
        limit = Limit(rate=5, burst=10)
        results = await asyncio.gather(*(limiter.take("user:a", limit) for _ in range(25)))
        allowed = sum(r.allowed for r in results)
        assert 10 <= allowed <= 11  # the burst (plus at most one refilled token meanwhile)
        denied = [r for r in results if not r.allowed]
        assert all(r.retry_after == 1 for r in denied)
        assert (await limiter.take("user:b", limit)).allowed, "buckets are per key"
        deadline = asyncio.get_running_loop().time() + 5
        while not (await limiter.take("user:a", limit)).allowed:  # refills at 5/s
            assert asyncio.get_running_loop().time() < deadline, "bucket never refilled"
            await asyncio.sleep(0.05)
        ttl = await client.pttl(f"{redis_prefix}user:a")
        assert 0 < ttl <= 3000, "idle buckets must expire"
    finally:
        await client.aclose()


async def test_redis_down_fails_open_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.Redis(
        host="127.0.0.1",
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        limiter = RateLimiter(client, "down:", pause_seconds=0.3)
        with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
            started = time.monotonic()
            results = [await limiter.take("ip:1", Limit(1, 1)) for _ in range(50)]
            assert time.monotonic() - started < 2, "a Redis outage must not stall requests"
            await asyncio.sleep(0.35)
            assert (await limiter.take("ip:1", Limit(1, 1))).allowed  # asks Redis again
        assert all(r.allowed for r in results)
        warnings = [r for r in caplog.records if "failing open" in r.getMessage()]
        assert len(warnings) == 1, "the warning is rate-limited, not one per request"
    finally:
        await client.aclose()


def test_limit_parsing() -> None:
    assert Limit.parse("20/40") == Limit(20.0, 40)
    assert Limit.parse("3") == Limit(3.0, 3)
    with pytest.raises(ValueError, match="positive"):
        Limit.parse("0/5")
