"""Token-bucket rate limiting in Redis, per client IP and per caller.

One Lua script refills and takes a token atomically (Redis runs a script alone), using the
Redis server's clock so every gateway replica shares one bucket. A bucket is a hash
`{tokens, ts}` expiring once it would be full again. The same script with a cost of 0 reads
a bucket without taking (`peek`). Every decision carries what the RateLimit headers say
(`Decision.headers`), in three generations so every client finds the names it looks for:

- draft 03, as Envoy's local rate limit sends them (`enable_x_ratelimit_headers:
  DRAFT_VERSION_03`): `X-RateLimit-Limit` = the burst, `-Remaining` = whole tokens left,
  `-Reset` = seconds until the bucket is full again;
- the same three values under the un-prefixed names of drafts 00-06 of
  draft-ietf-httpapi-ratelimit-headers (`RateLimit-Limit`, `-Remaining`, `-Reset`);
- the current draft's structured fields (drafts 07 and later, RFC 8941 lists):
  `RateLimit-Policy: "ip";q=200;w=2` (the policy: quota `q` = the burst, window `w` = the
  seconds an empty bucket takes to fill) and `RateLimit: "ip";r=150;t=1` (remaining `r`,
  seconds `t` until the quota is whole again). The policy is named after the bucket's kind
  (`ip`: per client address, `user`: per JWT subject).

When the limiter cannot ask Redis it cannot decide, and says so (`Decision.undecided`; the
gateway answers 503 with `Retry-After`, never a silent pass). Two different reasons:

- Saturation: every one of the `max_concurrency` Redis connections is busy and none came free
  within `wait_seconds` (or redis-py reports "Too many connections"). That is load, not an
  outage: the request is refused (503, `Retry-After: 1`) in every failure mode, because
  letting traffic through unmetered exactly when there is the most of it is what a rate
  limiter exists to prevent (docs/design.md §10). Redis is asked again by the next request.
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
from dataclasses import dataclass, replace
from enum import StrEnum

import redis.asyncio as aioredis
from redis.exceptions import MaxConnectionsError, RedisError

logger = logging.getLogger(__name__)

_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
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
if cost == 0 then
  return {1, 0, tostring(tokens)}
end
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
return {allowed, wait_ms, tostring(tokens)}
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

    @property
    def window(self) -> int:
        """Whole seconds an empty bucket takes to fill again (at least 1): the window of the
        RateLimit-Policy header, whose quota is the burst."""
        return max(1, math.ceil(self.burst / self.rate - 1e-9))


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
    `limit` (the burst), `remaining` (whole tokens left) and `reset` (seconds until the bucket
    is full again) are what the RateLimit headers say; `remaining`/`reset` are None when Redis
    could not be asked and the request was let through.
    """

    allowed: bool
    retry_after: int = 0
    undecided: bool = False
    reason: str = ""
    limit: int = 0
    remaining: int | None = None
    reset: int | None = None
    #: the bucket's kind (`ip`, `user`): the policy's name in RateLimit-Policy and RateLimit
    policy: str = ""
    #: seconds an empty bucket takes to fill: the policy's window (`w`); 0 leaves it out
    window: int = 0

    def headers(self) -> dict[str, str]:
        """Every RateLimit header this decision can fill (see the module docstring): the
        draft-03 `X-RateLimit-*` Envoy sends, the same values un-prefixed (`RateLimit-Limit`,
        `-Remaining`, `-Reset`), and the current draft's `RateLimit-Policy` and `RateLimit`
        structured fields. What the limiter does not know (it let the request through without
        asking Redis) is left out: then only the limits and the policy are sent."""
        found = {LIMIT_HEADER: str(self.limit), IETF_LIMIT_HEADER: str(self.limit)}
        if self.remaining is not None:
            found[REMAINING_HEADER] = found[IETF_REMAINING_HEADER] = str(self.remaining)
        if self.reset is not None:
            found[RESET_HEADER] = found[IETF_RESET_HEADER] = str(self.reset)
        name = _sf_string(self.policy or "default")
        window = f";w={self.window}" if self.window > 0 else ""
        found[POLICY_HEADER] = f"{name};q={self.limit}{window}"
        if self.remaining is not None:
            reset = f";t={self.reset}" if self.reset is not None else ""
            found[STATE_HEADER] = f"{name};r={self.remaining}{reset}"
        return found


def _sf_string(text: str) -> str:
    """`text` as an RFC 8941 sf-string (printable ASCII; `"` and `\\` escaped)."""
    printable = "".join(c for c in text if " " <= c <= "~")
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: draft 03 (Envoy's `enable_x_ratelimit_headers: DRAFT_VERSION_03`)
LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"
#: drafts 00-06 of draft-ietf-httpapi-ratelimit-headers: the same values, un-prefixed
IETF_LIMIT_HEADER = "RateLimit-Limit"
IETF_REMAINING_HEADER = "RateLimit-Remaining"
IETF_RESET_HEADER = "RateLimit-Reset"
#: the current draft (07 and later): the policy and the state as structured fields
POLICY_HEADER = "RateLimit-Policy"
STATE_HEADER = "RateLimit"
#: what Envoy's local_ratelimit sends too
DRAFT03_HEADERS = (LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER)
#: every RateLimit header the Python gateway sends
RATELIMIT_HEADERS = (
    *DRAFT03_HEADERS,
    IETF_LIMIT_HEADER,
    IETF_REMAINING_HEADER,
    IETF_RESET_HEADER,
    POLICY_HEADER,
    STATE_HEADER,
)


def tightest(decisions: list[Decision]) -> Decision | None:
    """The decision closest to refusal (fewest tokens left; an unknown count counts as
    plenty), whose headers a response carries when several buckets were asked."""
    if not decisions:
        return None
    return min(decisions, key=lambda d: (d.remaining is None, d.remaining or 0))


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
        return await self._ask(bucket, limit, 1)

    async def peek(self, bucket: str, limit: Limit) -> Decision:
        """What `bucket` holds, taking nothing (for the RateLimit headers of requests that are
        not metered, such as /healthz)."""
        return await self._ask(bucket, limit, 0)

    async def _ask(self, bucket: str, limit: Limit, cost: int) -> Decision:
        decision = await self._decide(bucket, limit, cost)
        # the policy the headers name: the bucket's kind (`ip:<address>` -> `ip`)
        policy = bucket.partition(":")[0] if ":" in bucket else "default"
        return replace(decision, policy=policy, window=limit.window)

    async def _decide(self, bucket: str, limit: Limit, cost: int) -> Decision:
        if time.monotonic() < self._paused_until:
            return self._outage(limit)
        if not await self._slots.acquire():
            why = f"no Redis connection free within {self._slots.wait} s"
            return self._saturated(why, limit)
        try:
            allowed, wait_ms, left = await self._script(
                keys=[f"{self.prefix}{bucket}"], args=[limit.rate, limit.burst, cost]
            )
        except MaxConnectionsError as exc:
            return self._saturated(str(exc), limit)
        except (RedisError, OSError, TimeoutError) as exc:
            self._paused_until = time.monotonic() + self.pause_seconds
            self._warn(
                "outage",
                "rate limiter failing %s: Redis unavailable (%s)",
                self.failure_mode.value,
                exc,
            )
            return self._outage(limit)
        finally:
            self._slots.release()
        tokens = max(0.0, float(left))
        remaining = math.floor(tokens)
        reset = max(0, math.ceil((limit.burst - tokens) / limit.rate - 1e-9))
        if int(allowed) == 1:
            return Decision(True, limit=limit.burst, remaining=remaining, reset=reset)
        retry = max(1, math.ceil(int(wait_ms) / 1000))
        return Decision(False, retry, limit=limit.burst, remaining=remaining, reset=reset)

    def _outage(self, limit: Limit) -> Decision:
        if self.failure_mode is FailureMode.OPEN:
            return Decision(True, limit=limit.burst)
        retry = max(1, math.ceil(self.pause_seconds))
        return Decision(
            False,
            retry,
            undecided=True,
            reason="RATE_LIMITER_UNAVAILABLE",
            limit=limit.burst,
            remaining=0,
            reset=retry,
        )

    def _saturated(self, why: str, limit: Limit) -> Decision:
        self._warn("saturated", "rate limiter saturated, refusing requests: %s", why)
        return Decision(
            False,
            1,
            undecided=True,
            reason="RATE_LIMITER_SATURATED",
            limit=limit.burst,
            remaining=0,
            reset=1,
        )

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, float("-inf")) > 10:
            self._last_warning[kind] = now
            logger.warning(message, *args)
