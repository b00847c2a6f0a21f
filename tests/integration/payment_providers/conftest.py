"""Fixtures: the local Razorpay and PayPal fakes and adapters pointed at them.

Adapters use a short timeout (the fakes hang longer in `timeout`/`lost` mode) and a fast retry
policy so retry tests take milliseconds, not seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from mppo.platform.backoff import RetryPolicy
from payment_svc.adapters.providers.paypal import PayPalProvider
from payment_svc.adapters.providers.razorpay import RazorpayProvider
from payment_svc.simulators.paypal import PayPalSimulator
from payment_svc.simulators.razorpay import RazorpaySimulator

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.02, max_delay=0.1)
TIMEOUT_S = 0.6
HANG_S = 1.5


@pytest_asyncio.fixture(loop_scope="session")
async def fake_razorpay() -> AsyncIterator[RazorpaySimulator]:
    fake = RazorpaySimulator(hang_s=HANG_S)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def razorpay_provider(fake_razorpay: RazorpaySimulator) -> RazorpayProvider:
    return RazorpayProvider(
        key_id=fake_razorpay.key_id,
        key_secret=fake_razorpay.key_secret,
        webhook_secret=fake_razorpay.webhook_secret,
        api_base=fake_razorpay.base_url,
        timeout=TIMEOUT_S,
        retry=FAST_RETRY,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def fake_paypal() -> AsyncIterator[PayPalSimulator]:
    fake = PayPalSimulator(hang_s=HANG_S)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def paypal_provider(fake_paypal: PayPalSimulator) -> AsyncIterator[PayPalProvider]:
    provider = PayPalProvider(
        client_id=fake_paypal.client_id,
        client_secret=fake_paypal.client_secret,
        webhook_id=fake_paypal.webhook_id,
        api_base=fake_paypal.base_url,
        timeout=TIMEOUT_S,
        retry=FAST_RETRY,
    )
    try:
        yield provider
    finally:
        await provider.close()
