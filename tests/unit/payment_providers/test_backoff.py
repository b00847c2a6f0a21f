"""retry_async: bounded attempts, attempt numbers, growing delays, no retry of final errors."""

from __future__ import annotations

import pytest

from mppo.platform.backoff import RetryPolicy, retry_async
from payment_svc.adapters.providers.base import ProviderError

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


async def test_retries_until_success_and_passes_attempt_numbers() -> None:
    seen: list[int] = []

    async def op(attempt: int) -> str:
        seen.append(attempt)
        if attempt < 2:
            raise ProviderError("busy", retryable=True)
        return "ok"

    assert await retry_async(op, FAST, is_retryable=_retryable, what="t") == "ok"
    assert seen == [0, 1, 2]


async def test_gives_up_after_the_bound_with_the_last_error() -> None:
    calls = 0

    async def op(attempt: int) -> None:
        nonlocal calls
        calls += 1
        raise ProviderError(f"down {attempt}", retryable=True)

    with pytest.raises(ProviderError, match="down 2"):
        await retry_async(op, FAST, is_retryable=_retryable, what="t")
    assert calls == 3


async def test_final_errors_are_not_retried() -> None:
    calls = 0

    async def op(attempt: int) -> None:
        nonlocal calls
        calls += 1
        raise ProviderError("bad request", retryable=False)

    with pytest.raises(ProviderError):
        await retry_async(op, FAST, is_retryable=_retryable, what="t")
    assert calls == 1


def test_delays_grow_and_are_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(base_delay=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.0 for _ in range(100))
