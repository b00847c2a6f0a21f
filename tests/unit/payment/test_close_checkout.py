"""CloseCheckout against fakes: a payment link whose share is no longer wanted is closed at the
provider (the payment VOIDED) unless the payer completed it first, and money that still reaches
a closed or failed checkout is released at once."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mppo.platform.errors import PermissionDeniedError, UnavailableError
from mppo.platform.identity import Caller
from payment_svc.adapters.providers.base import ProviderError, ProviderStatus
from payment_svc.domain.model import PaymentStatus
from payment_svc.service_layer import commands
from tests.unit.payment.test_handlers import ORDER, World

S = PaymentStatus
GROUP_SERVICE = Caller(service="group")


def close(payment_id: str, caller: Caller = GROUP_SERVICE) -> commands.CloseCheckout:
    return commands.CloseCheckout(caller, payment_id, "the host covers the rest")


@pytest.fixture
def world() -> World:
    return World()


async def test_an_unpaid_checkout_is_expired_at_the_provider_and_the_payment_voided(
    world: World,
) -> None:
    payment = await world.create()
    closed = await world.handlers.close_checkout(close(payment.payment_id), world.uow())
    assert closed.status is S.VOIDED
    assert ("expire", f"expire:{payment.payment_id}") in world.provider.calls
    assert world.provider.states[payment.provider_payment_id].status is ProviderStatus.VOIDED
    assert world.events(payment.payment_id) == ["payment.requested", "payment.voided"]
    # again: nothing more is asked of the provider
    calls = len(world.provider.calls)
    again = await world.handlers.close_checkout(close(payment.payment_id), world.uow())
    assert (again.status, len(world.provider.calls)) == (S.VOIDED, calls)


async def test_a_checkout_the_payer_completed_first_is_left_as_it_stands(world: World) -> None:
    payment = await world.create()
    world.provider.authorize(payment.provider_payment_id, 1250)  # its webhook is not here yet
    closed = await world.handlers.close_checkout(close(payment.payment_id), world.uow())
    assert closed.status is S.AUTHORIZED  # the caller releases it like any payment it rejects
    assert world.events(payment.payment_id)[-1] == "payment.succeeded"
    assert not [c for c in world.provider.calls if c[0] == "void"]
    authorized = await world.authorized(member="m-2")
    calls = len(world.provider.calls)
    kept = await world.handlers.close_checkout(close(authorized.payment_id), world.uow())
    assert (kept.status, len(world.provider.calls)) == (S.AUTHORIZED, calls)


async def test_a_provider_that_cannot_close_it_now_is_unavailable_and_nothing_changes(
    world: World,
) -> None:
    payment = await world.create()
    world.provider.failures.append(ProviderError("timeout", retryable=True))
    with pytest.raises(UnavailableError):
        await world.handlers.close_checkout(close(payment.payment_id), world.uow())
    assert world.status(payment.payment_id) is S.REQUIRES_ACTION
    with pytest.raises(PermissionDeniedError):
        await world.handlers.close_checkout(
            close(payment.payment_id, Caller(user_id="alice")), world.uow()
        )


async def test_money_on_a_failed_or_closed_checkout_is_released_at_once(world: World) -> None:
    failed = await world.create()
    ppid = failed.provider_payment_id
    world.provider.states[ppid] = replace(world.provider.states[ppid], status=ProviderStatus.FAILED)
    await world.handlers.sync_payment(commands.SyncPayment(ORDER, failed.payment_id), world.uow())
    assert world.status(failed.payment_id) is S.FAILED
    world.provider.authorize(ppid, 1250)  # another card on the same page, after the decline
    closed = await world.handlers.close_checkout(close(failed.payment_id), world.uow())
    assert closed.status is S.FAILED
    assert ("void", f"late:{failed.payment_id}") in world.provider.calls
    assert world.provider.states[ppid].status is ProviderStatus.VOIDED
    # closed first, then authorized by a re-read racing the close (PayPal authorizes on fetch)
    raced = await world.create(member="m-3")
    await world.handlers.close_checkout(close(raced.payment_id), world.uow())
    world.provider.authorize(raced.provider_payment_id, 1250)
    synced, changed = await world.handlers.sync_payment(
        commands.SyncPayment(ORDER, raced.payment_id), world.uow()
    )
    assert (synced.status, changed) == (S.VOIDED, False)
    assert ("void", f"late:{raced.payment_id}") in world.provider.calls
    assert world.provider.states[raced.provider_payment_id].status is ProviderStatus.VOIDED
