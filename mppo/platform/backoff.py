"""Bounded exponential backoff for calls to outside systems, and the one rule of what to retry.

`retryable_http_status(status)` is the rule for every HTTP peer (payment providers, the
merchant, client webhooks): 408, 425, 429 and 5xx are transient, any other status is an
answer. Calls to our own gRPC services use `mppo.platform.rpc_status.is_retryable`.

`retry_async(op, policy, is_retryable=...)` runs `op(attempt)` until it succeeds, raises an
error `is_retryable` rejects, or `policy.attempts` calls have been made; the last error is
re-raised. `op` gets the attempt number (0 first) so a caller can look up what an earlier,
possibly successful, attempt created before trying again. Whatever idempotency key the call
carries must be the same on every attempt: that is the caller's side of the contract.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


_TRANSIENT_HTTP = frozenset({408, 425, 429})


def retryable_http_status(status: int) -> bool:
    """Whether an HTTP status means "try again later" (timeouts, rate limits, server errors)."""
    return status in _TRANSIENT_HTTP or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: delays grow `base_delay * 2**n` up to `max_delay`,
    each shortened by up to `jitter` (a fraction) so callers do not retry in step."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 5.0
    jitter: float = 0.25

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1 = the first)."""
        raw = min(self.max_delay, self.base_delay * 2.0 ** max(0, failures - 1))
        return raw * (1.0 - self.jitter * random.random())


async def retry_async(
    op: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    is_retryable: Callable[[BaseException], bool],
    what: str,
) -> T:
    """Run `op(attempt)` with bounded exponential backoff between retryable failures."""
    attempt = 0
    while True:
        try:
            return await op(attempt)
        except Exception as exc:
            attempt += 1
            if attempt >= policy.attempts or not is_retryable(exc):
                raise
            pause = policy.delay(attempt)
            logger.warning(
                "%s failed (attempt %s of %s): %s; retrying in %.2fs",
                what,
                attempt,
                policy.attempts,
                exc,
                pause,
            )
            await asyncio.sleep(pause)
