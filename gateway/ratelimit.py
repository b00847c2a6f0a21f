"""Token-bucket rate limiting in Redis, per client IP and per caller.

One Lua script refills and takes a token atomically (Redis runs a script alone), using the
Redis server's clock so every gateway replica shares one bucket. A bucket is a hash
`{tokens, ts}` expiring once it would be full again.

Redis down: the request is let through and a warning is logged (at most every 10 s); after a
failure Redis is not asked again for `pause_seconds`, so an outage costs one timeout per pause,
not one per request.
ARCHITECTURE.md §1: Redis is a coordination aid and with it down the system is slower, not
wrong. Rate limiting protects capacity, not correctness (JWT, service-side permission checks
and idempotency keys still apply), so failing closed would turn a Redis outage into a full API
outage. Envoy's per-instance `local_ratelimit` is the backstop in production.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + (math.max(0, now - ts) * rate / 1000))
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""


@dataclass(frozen=True)
class Limit:
    """`rate` tokens per second, at most `burst` saved up."""

    rate: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Limit:
        """`"RATE/BURST"`, e.g. `"10/20"` (10 per second, bursts of 20)."""
        rate, _, burst = text.partition("/")
        limit = cls(float(rate), int(burst or max(1, math.ceil(float(rate)))))
        if limit.rate <= 0 or limit.burst < 1:
            raise ValueError(f"rate limit {text!r} must be positive")
        return limit


@dataclass(frozen=True)
class Decision:
    """Whether a request may pass; if not, after how many seconds to retry."""

    allowed: bool
    retry_after: int = 0


class RateLimiter:
    """Token buckets in Redis under `prefix`."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str = "mppo:gw:rl:", pause_seconds: float = 2.0
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.pause_seconds = pause_seconds
        self._script = redis.register_script(_SCRIPT)
        self._last_warning = float("-inf")
        self._paused_until = float("-inf")

    async def take(self, bucket: str, limit: Limit) -> Decision:
        """Take one token from `bucket`; fails open (allowed) when Redis does not answer."""
        if time.monotonic() < self._paused_until:
            return Decision(True)
        try:
            allowed, wait_ms = await self._script(
                keys=[f"{self.prefix}{bucket}"], args=[limit.rate, limit.burst]
            )
        except (RedisError, OSError, TimeoutError) as exc:
            now = time.monotonic()
            self._paused_until = now + self.pause_seconds
            if now - self._last_warning > 10:
                self._last_warning = now
                logger.warning("rate limiter failing open: Redis unavailable (%s)", exc)
            return Decision(True)
        if int(allowed) == 1:
            return Decision(True)
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))
