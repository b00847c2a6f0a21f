"""Token-bucket rate limiting in Redis, per client IP and per caller.

One Lua script refills and takes a token atomically (Redis runs a script alone), using the
Redis server's clock so every gateway replica shares one bucket. A bucket is a hash
`{tokens, ts}` expiring once it would be full again.

When the limiter cannot ask Redis it cannot decide, and says so (`Decision.undecided`; the
gateway answers 503 with `Retry-After`, never a silent pass). Two different reasons:

- Saturation: every one of the `max_concurrency` Redis connections is busy and none came free
  within `wait_seconds` (or redis-py reports "Too many connections"). That is load, not an
  outage: the request is refused (503, `Retry-After: 1`) in every failure mode, because
  letting traffic through unmetered exactly when there is the most of it is what a rate
  limiter exists to prevent (ARCHITECTURE.md §9). Redis is asked again by the next request.
- Outage: Redis does not answer (connection refused or reset, socket timeout). What happens
  follows `failure_mode`: `closed` (the default outside dev/test, `MPPO_RATELIMIT_FAILURE_MODE`)
  refuses with 503 and `Retry-After`; `open` lets the request through. Either way a warning is
  logged (at most every 10 s) and Redis is not asked again for `pause_seconds`, so an outage
  costs one timeout per pause, not one per request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.exceptions import MaxConnectionsError, RedisError

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


class FailureMode(StrEnum):
    """What the limiter does while Redis is down."""

    OPEN = "open"  # let requests through (with a warning)
    CLOSED = "closed"  # refuse them: 503 with Retry-After

    @classmethod
    def parse(cls, text: str) -> FailureMode:
        """`open` or `closed`."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(f"failure mode {text!r} must be open or closed") from None


@dataclass(frozen=True)
class Decision:
    """Whether a request may pass; if not, after how many seconds to retry.

    `undecided` means Redis could not be asked (saturated or down): a 503, not a 429.
    """

    allowed: bool
    retry_after: int = 0
    undecided: bool = False
    reason: str = ""


class _Slots:
    """At most `size` concurrent Redis calls; a waiter gives up after `wait` seconds.

    A semaphore whose timeout resolves the waiter's future instead of cancelling its task, so a
    permit is never lost to a timeout racing a release.
    """

    def __init__(self, size: int, wait: float) -> None:
        self.free = size
        self.wait = wait
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()

    async def acquire(self) -> bool:
        """True once a slot is held; False if none came free in time."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.wait, _resolve, waiter, False)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as the caller went away
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Hand the slot to the oldest waiter still waiting, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class RateLimiter:
    """Token buckets in Redis under `prefix`.

    `max_concurrency` must not exceed the Redis client's pool size (`build_app` makes them
    equal), so waiting for a slot is waiting for a connection.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "mppo:gw:rl:",
        *,
        failure_mode: FailureMode = FailureMode.CLOSED,
        max_concurrency: int = 256,
        wait_seconds: float = 0.5,
        pause_seconds: float = 2.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.failure_mode = failure_mode
        self.pause_seconds = pause_seconds
        self._slots = _Slots(max_concurrency, wait_seconds)
        self._script = redis.register_script(_SCRIPT)
        self._last_warning: dict[str, float] = {}
        self._paused_until = float("-inf")

    async def take(self, bucket: str, limit: Limit) -> Decision:
        """Take one token from `bucket`; see the module docstring for when Redis cannot say."""
        if time.monotonic() < self._paused_until:
            return self._outage()
        if not await self._slots.acquire():
            return self._saturated(f"no Redis connection free within {self._slots.wait} s")
        try:
            allowed, wait_ms = await self._script(
                keys=[f"{self.prefix}{bucket}"], args=[limit.rate, limit.burst]
            )
        except MaxConnectionsError as exc:
            return self._saturated(str(exc))
        except (RedisError, OSError, TimeoutError) as exc:
            self._paused_until = time.monotonic() + self.pause_seconds
            self._warn(
                "outage",
                "rate limiter failing %s: Redis unavailable (%s)",
                self.failure_mode.value,
                exc,
            )
            return self._outage()
        finally:
            self._slots.release()
        if int(allowed) == 1:
            return Decision(True)
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))

    def _outage(self) -> Decision:
        if self.failure_mode is FailureMode.OPEN:
            return Decision(True)
        return Decision(
            False,
            max(1, math.ceil(self.pause_seconds)),
            undecided=True,
            reason="RATE_LIMITER_UNAVAILABLE",
        )

    def _saturated(self, why: str) -> Decision:
        self._warn("saturated", "rate limiter saturated, refusing requests: %s", why)
        return Decision(False, 1, undecided=True, reason="RATE_LIMITER_SATURATED")

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, float("-inf")) > 10:
            self._last_warning[kind] = now
            logger.warning(message, *args)
