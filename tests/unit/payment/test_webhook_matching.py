"""Which payment a webhook is about is decided by provider ids we recorded, never by what the
event says about itself (metadata, merchant or client reference) alone; a provider id we have
not seen is accepted only once the provider lists it on the checkout we created. Signed bodies
of the wrong shape are refused as INVALID_ARGUMENT and leave a trace, never an INTERNAL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mppo.platform.errors import InvalidArgumentError, UnavailableError
from payment_svc.adapters.providers.base import ProviderError
from payment_svc.domain.model import PaymentStatus
from payment_svc.service_layer import commands
from tests.unit.payment.fakes import FakeProvider
from tests.unit.payment.test_handlers import World

S = PaymentStatus


def signed(**body: Any) -> commands.HandleWebhook:
    return commands.HandleWebhook(
        provider="sandbox", body=json.dumps(body).encode(), headers={"X-Signature": "valid"}
    )


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def lazy() -> World:
    """A provider that, like real Stripe, makes the payment only when the payer confirms."""
    return World(provider=FakeProvider(lazy=True))


async def test_a_webhook_naming_our_payment_only_in_its_metadata_changes_nothing(
    world: World,
) -> None:
    """Anyone holding a signing secret (the sandbox's is published) names a victim payment in
    the metadata and a payment id of their own: recorded, ignored, 2xx."""
    victim = await world.create(5000)
    result = await world.handlers.handle_webhook(
        signed(
            id="evt_forged",
            object="pi_attacker",
            status="authorized",
            amount=5000,
            reference=victim.payment_id,
        ),
        world.uow(),
    )
    assert not result.duplicate  # answered 2xx: the sender has nothing to retry
    assert world.status(victim.payment_id) is S.REQUIRES_ACTION
    assert world.events(victim.payment_id) == ["payment.requested"]
    row = world.db.webhooks[("sandbox", "evt_forged")]
    assert row["outcome"] == "mismatch"
    assert row["payment_id"] is None
    assert victim.provider_checkout_id in row["detail"]
    # the provider was asked about the checkout we created, and said no
    assert ("checkout_ids", victim.provider_checkout_id) in world.provider.calls
    assert ("sandbox", "pi_attacker") not in world.db.provider_ids


async def test_a_payment_id_first_seen_in_a_webhook_is_applied_once_the_provider_confirms_it(
    lazy: World,
) -> None:
    payment = await lazy.create(700)
    session = payment.provider_checkout_id
    assert payment.provider_payment_id == session  # no PaymentIntent yet
    intent = lazy.provider.confirm(session)
    lazy.provider.authorize(intent, 700)
    await lazy.handlers.handle_webhook(
        signed(
            id="evt_1", object=intent, status="authorized", amount=700, reference=payment.payment_id
        ),
        lazy.uow(),
    )
    assert lazy.status(payment.payment_id) is S.AUTHORIZED
    assert lazy.db.provider_ids[("sandbox", intent)] == payment.payment_id
    assert lazy.db.webhooks[("sandbox", "evt_1")]["outcome"] == "applied"
    # from now on the id is ours: no re-read, and no reference needed
    asked = lazy.provider.calls.count(("checkout_ids", session))
    await lazy.provider.capture(intent, 700, "elsewhere")
    await lazy.handlers.handle_webhook(
        signed(id="evt_2", object=intent, status="captured", amount=700), lazy.uow()
    )
    assert lazy.status(payment.payment_id) is S.CAPTURED
    assert lazy.provider.calls.count(("checkout_ids", session)) == asked


async def test_a_new_id_next_to_our_checkout_id_is_checked_with_the_provider(lazy: World) -> None:
    """checkout.session.completed names our session and, for the first time, its intent."""
    payment = await lazy.create(900)
    session = payment.provider_checkout_id
    intent = lazy.provider.confirm(session)
    lazy.provider.authorize(intent, 900)
    await lazy.handlers.handle_webhook(
        signed(id="evt_ok", object=intent, also=[session], status="authorized", amount=900),
        lazy.uow(),
    )
    assert lazy.status(payment.payment_id) is S.AUTHORIZED
    assert lazy.db.provider_ids[("sandbox", intent)] == payment.payment_id


async def test_a_foreign_id_next_to_our_checkout_id_changes_nothing(lazy: World) -> None:
    payment = await lazy.create(900)
    session = payment.provider_checkout_id
    await lazy.handlers.handle_webhook(
        signed(id="evt_x", object="pi_foreign", also=[session], status="authorized", amount=900),
        lazy.uow(),
    )
    assert lazy.status(payment.payment_id) is S.REQUIRES_ACTION
    assert lazy.db.webhooks[("sandbox", "evt_x")]["outcome"] == "mismatch"
    assert ("sandbox", "pi_foreign") not in lazy.db.provider_ids


async def test_ids_of_two_of_our_payments_in_one_event_change_nothing(world: World) -> None:
    first = await world.create(100)
    second = await world.create(200, member="7d0f7d61-7a9e-4a53-a8f8-0c4cba6d2e11")
    await world.handlers.handle_webhook(
        signed(
            id="evt_two",
            object=first.provider_payment_id,
            also=[second.provider_checkout_id],
            status="authorized",
            amount=100,
        ),
        world.uow(),
    )
    assert world.db.webhooks[("sandbox", "evt_two")]["outcome"] == "mismatch"
    assert world.status(first.payment_id) is S.REQUIRES_ACTION
    assert world.status(second.payment_id) is S.REQUIRES_ACTION


async def test_known_ids_win_over_what_the_metadata_claims(world: World) -> None:
    mine = await world.create(100)
    other = await world.create(200, member="7d0f7d61-7a9e-4a53-a8f8-0c4cba6d2e11")
    await world.handlers.handle_webhook(
        signed(
            id="evt_k",
            object=mine.provider_payment_id,
            status="authorized",
            amount=100,
            reference=other.payment_id,
        ),
        world.uow(),
    )
    assert world.status(mine.payment_id) is S.AUTHORIZED
    assert world.status(other.payment_id) is S.REQUIRES_ACTION


async def test_a_provider_that_cannot_answer_makes_the_sender_retry(lazy: World) -> None:
    payment = await lazy.create(300)
    intent = lazy.provider.confirm(payment.provider_checkout_id)
    lazy.provider.authorize(intent, 300)
    message = signed(
        id="evt_r", object=intent, status="authorized", amount=300, reference=payment.payment_id
    )
    lazy.provider.failures.append(ProviderError("down", retryable=True))
    with pytest.raises(UnavailableError):
        await lazy.handlers.handle_webhook(message, lazy.uow())
    assert lazy.db.webhooks == {}  # not recorded: the redelivery is not a duplicate
    await lazy.handlers.handle_webhook(message, lazy.uow())
    assert lazy.status(payment.payment_id) is S.AUTHORIZED


async def test_a_refused_reread_is_a_mismatch_not_a_retry(lazy: World) -> None:
    payment = await lazy.create(300)
    lazy.provider.failures.append(ProviderError("no such checkout", retryable=False))
    await lazy.handlers.handle_webhook(
        signed(id="evt_n", object="pi_9", status="authorized", reference=payment.payment_id),
        lazy.uow(),
    )
    assert lazy.db.webhooks[("sandbox", "evt_n")]["outcome"] == "mismatch"
    assert lazy.status(payment.payment_id) is S.REQUIRES_ACTION


async def test_references_that_name_nothing_of_ours_are_unmatched(world: World) -> None:
    await world.create(100)
    for event_id, reference in (("evt_a", "not-a-uuid"), ("evt_b", "")):
        await world.handlers.handle_webhook(
            signed(id=event_id, object="pi_zz", status="authorized", reference=reference),
            world.uow(),
        )
        assert world.db.webhooks[("sandbox", event_id)]["outcome"] == "unmatched"
    assert [c for c in world.provider.calls if c[0] == "checkout_ids"] == []


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"no": "id"}', b'{"id": 7}', b"[" * 5000 + b"]" * 5000],
)
async def test_a_signed_body_of_the_wrong_shape_is_invalid_and_recorded(
    world: World, body: bytes
) -> None:
    message = commands.HandleWebhook(
        provider="sandbox", body=body, headers={"x-signature": "valid"}
    )
    with pytest.raises(InvalidArgumentError):
        await world.handlers.handle_webhook(message, world.uow())
    (key,) = world.db.webhooks
    assert key[1].startswith("malformed:sha256:")
    row = world.db.webhooks[key]
    assert row["outcome"] == "malformed"
    assert row["body"] == ""  # hostile input is not stored, only its hash
    # the same body again is refused again, and recorded once
    with pytest.raises(InvalidArgumentError):
        await world.handlers.handle_webhook(message, world.uow())
    assert len(world.db.webhooks) == 1
