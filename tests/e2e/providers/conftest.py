"""A whole system whose members may pay with three providers: ``mppo dev up`` of every
default service, the payment service offering the sandbox (Stripe's API, its real adapter),
PayPal and Razorpay, the latter two through their real adapters pointed at the local fakes
(payment_svc/simulators/paypal.py, fake_razorpay.py) that run in this test process, sign their
webhooks as the real providers do and send them to the gateway's webhook routes. Shared by
this package's tests; ``mppo dev down`` after its last one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from payment_svc.simulators.paypal import PayPalSimulator
from payment_svc.simulators.razorpay import RazorpaySimulator
from tests.support.e2e import ProviderFakes, Stack, start_stack, until_down


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def fakes() -> AsyncIterator[ProviderFakes]:
    """The local PayPal and Razorpay, serving from the tests' event loop."""
    paypal, razorpay = PayPalSimulator(), RazorpaySimulator()
    await paypal.start()
    await razorpay.start()
    try:
        yield ProviderFakes(paypal, razorpay)
    finally:
        await paypal.stop()
        await razorpay.stop()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, fakes: ProviderFakes) -> Iterator[Stack]:
    """The running stack (overrides tests/e2e's ``stack`` for this package, so its ``api``
    fixture talks to this one); after the tests, dev down leaves no process behind and none
    died unnoticed."""
    running = start_stack(tmp_path_factory.mktemp("providers-stack"), env=fakes.env())
    fakes.deliver_to(running.gateway)
    yield from until_down(running)
