"""The payment service layer against fakes: handlers of shape (message, uow) with an in-memory
unit of work, provider and group membership (no Postgres, no network)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2
from mppo.platform.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from mppo.platform.events import Event
from mppo.platform.identity import Caller
from payment_svc.adapters.providers.base import ProviderError
from payment_svc.domain.model import Payment, PaymentStatus
from payment_svc.service_layer import commands
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.settings import PaymentSettings
from tests.unit.payment.fakes import Database, FakeGroups, FakeProvider, FakeUnitOfWork

S = PaymentStatus
ORDER = Caller(service="order")
GROUP = str(uuid.uuid4())
MEMBER = str(uuid.uuid4())


@dataclass
class World:
    """The handlers and everything they touch."""

    db: Database = field(default_factory=Database)
    provider: FakeProvider = field(default_factory=FakeProvider)
    groups: FakeGroups = field(default_factory=FakeGroups)
    published: list[Event] = field(default_factory=list)
    wakes: int = 0
    handlers: PaymentHandlers = field(init=False)

    def __post_init__(self) -> None:
        self.handlers = PaymentHandlers(
            {"sandbox": self.provider},
            PaymentSettings.from_env({"MPPO_ENV": "test"}),
            self.groups,
            compensation_due=self.wake,
        )

    def wake(self) -> None:
        self.wakes += 1

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.db, self.published)

    def events(self, payment_id: str = "") -> list[str]:
        return [
            e.event_type for e in self.published if not payment_id or e.aggregate_id == payment_id
        ]

    def status(self, payment_id: str) -> PaymentStatus:
        return self.db.rows[payment_id].payment.status

    async def create(self, amount: int = 1250, member: str = MEMBER, group: str = GROUP) -> Payment:
        return await self.handlers.create_payment_intent(
            intent(amount, member=member, group=group), self.uow()
        )

    async def authorized(self, amount: int = 1250, member: str = MEMBER) -> Payment:
        payment = await self.create(amount, member=member)
        self.provider.authorize(payment.provider_payment_id, amount)
        synced, _ = await self.handlers.sync_payment(
            commands.SyncPayment(ORDER, payment.payment_id), self.uow()
        )
        assert synced.status is S.AUTHORIZED
        return synced


def intent(
    amount: int = 1250, *, member: str = MEMBER, group: str = GROUP, caller: Caller = ORDER
) -> commands.CreatePaymentIntent:
    return commands.CreatePaymentIntent(
        caller=caller,
        group_id=group,
        member_id=member,
        attempt=1,
        amount_minor=amount,
        currency_code="USD",
        provider="sandbox",
        description="Pizza night share",
    )


@pytest.fixture
def world() -> World:
    return World()


# create / read ---------------------------------------------------------------------------------
async def test_create_intent_opens_one_checkout_and_announces_it(world: World) -> None:
    payment = await world.create()
    assert payment.status is S.REQUIRES_ACTION
    assert payment.payment_link.startswith("https://pay.example/")
    assert world.events(payment.payment_id) == ["payment.requested"]
    # the checkout (session) and its payment, both recorded as ours
    assert payment.provider_checkout_id.startswith("cs_")
    assert world.db.provider_ids == {
        ("sandbox", payment.provider_payment_id): payment.payment_id,
        ("sandbox", payment.provider_checkout_id): payment.payment_id,
    }
    row = world.db.rows[payment.payment_id]
    assert row.next_check_at is not None  # reconciliation will look at it


async def test_create_intent_replays_the_same_payment(world: World) -> None:
    first = await world.create()
    again = await world.create()
    assert again.payment_id == first.payment_id
    assert again.payment_link == first.payment_link
    assert [c for c in world.provider.calls if c[0] == "checkout"] == [
        ("checkout", f"checkout:{first.payment_id}")
    ]
    assert world.events() == ["payment.requested"]


async def test_create_intent_with_other_parameters_is_refused(world: World) -> None:
    await world.create(1250)
    with pytest.raises(FailedPreconditionError) as refused:
        await world.create(1300)
    assert refused.value.reason == "INTENT_MISMATCH"


async def test_create_intent_on_a_closed_group_is_refused(world: World) -> None:
    closed = group_events_pb2.GroupCancelled(group_id=GROUP, reason="host cancelled")
    async with world.uow() as uow:
        await world.handlers.group_closed(closed, uow)
        await uow.commit()
    with pytest.raises(FailedPreconditionError) as refused:
        await world.create()
    assert refused.value.reason == "GROUP_CLOSED"
    assert world.db.rows == {}


async def test_a_failed_checkout_leaves_a_payment_to_retry(world: World) -> None:
    world.provider.failures.append(ProviderError("down", retryable=True))
    with pytest.raises(UnavailableError):
        await world.create()
    (row,) = world.db.rows.values()
    assert row.payment.payment_link == ""
    assert world.events() == []
    payment = await world.create()  # the retry finishes the same payment
    assert payment.payment_id == row.payment.payment_id
    assert payment.payment_link
    assert world.events() == ["payment.requested"]


async def test_end_users_may_not_move_money(world: World) -> None:
    payment = await world.authorized()
    mallory = Caller(user_id="mallory")
    refused = [
        world.handlers.create_payment_intent(intent(caller=mallory), world.uow()),
        world.handlers.capture_payment(
            commands.CapturePayment(mallory, payment.payment_id), world.uow()
        ),
        world.handlers.void_payment(commands.VoidPayment(mallory, payment.payment_id), world.uow()),
        world.handlers.refund_payment(
            commands.RefundPayment(mallory, payment.payment_id), world.uow()
        ),
        world.handlers.sync_payment(commands.SyncPayment(mallory, payment.payment_id), world.uow()),
    ]
    for call in refused:
        with pytest.raises(PermissionDeniedError):
            await call
    assert world.status(payment.payment_id) is S.AUTHORIZED


async def test_members_see_their_own_payments_and_the_host_sees_all(world: World) -> None:
    other = str(uuid.uuid4())
    mine = await world.create(member=MEMBER)
    theirs = await world.create(member=other)
    world.groups.groups[GROUP] = ("host", {MEMBER: "alice", other: "bob"})
    alice = Caller(user_id="alice")

    got = await world.handlers.get_payment(commands.GetPayment(alice, mine.payment_id), world.uow())
    assert got.payment_id == mine.payment_id
    with pytest.raises(NotFoundError):
        await world.handlers.get_payment(commands.GetPayment(alice, theirs.payment_id), world.uow())
    with pytest.raises(NotFoundError):
        await world.handlers.get_payment(
            commands.GetPayment(Caller(user_id="eve"), mine.payment_id), world.uow()
        )

    listed, more = await world.handlers.list_payments(
        commands.ListPayments(alice, GROUP), world.uow()
    )
    assert ([p.payment_id for p in listed], more) == ([mine.payment_id], "")
    hosted, _ = await world.handlers.list_payments(
        commands.ListPayments(Caller(user_id="host"), GROUP), world.uow()
    )
    assert {p.payment_id for p in hosted} == {mine.payment_id, theirs.payment_id}

    host = Caller(user_id="host")
    first, more = await world.handlers.list_payments(
        commands.ListPayments(host, GROUP, page_size=1), world.uow()
    )
    assert len(first) == 1
    assert more == first[0].payment_id
    second, last = await world.handlers.list_payments(
        commands.ListPayments(host, GROUP, page_size=1, after=more), world.uow()
    )
    assert last == ""
    assert {p.payment_id for p in first + second} == {mine.payment_id, theirs.payment_id}
    # a page covers the rows before the visibility filter: alice's pages may come out short
    pages: list[str] = []
    after = ""
    while True:
        page, after = await world.handlers.list_payments(
            commands.ListPayments(alice, GROUP, page_size=1, after=after), world.uow()
        )
        pages.extend(p.payment_id for p in page)
        if not after:
            break
    assert pages == [mine.payment_id]


async def test_unknown_payment_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        await world.handlers.get_payment(commands.GetPayment(ORDER, "nope"), world.uow())


# money movements -------------------------------------------------------------------------------
async def test_capture_after_authorization(world: World) -> None:
    payment = await world.authorized(1250)
    captured = await world.handlers.capture_payment(
        commands.CapturePayment(ORDER, payment.payment_id), world.uow()
    )
    assert captured.status is S.CAPTURED
    assert captured.amount_captured_minor == 1250
    assert world.events(payment.payment_id) == [
        "payment.requested",
        "payment.succeeded",
        "payment.captured",
    ]
    again = await world.handlers.capture_payment(
        commands.CapturePayment(ORDER, payment.payment_id), world.uow()
    )
    assert again.status is S.CAPTURED
    assert [c for c in world.provider.calls if c[0] == "capture"] == [
        ("capture", f"capture:{payment.payment_id}:1250")
    ]
    assert world.events(payment.payment_id).count("payment.captured") == 1
    history = [(c.from_status, c.to_status) for pid, c in world.db.history]
    assert history == [
        (None, S.REQUIRES_ACTION),
        (S.REQUIRES_ACTION, S.AUTHORIZED),
        (S.AUTHORIZED, S.CAPTURED),
    ]


async def test_capture_picks_up_a_late_authorization(world: World) -> None:
    payment = await world.create(900)
    world.provider.authorize(payment.provider_payment_id, 900)  # the webhook never came
    captured = await world.handlers.capture_payment(
        commands.CapturePayment(ORDER, payment.payment_id), world.uow()
    )
    assert captured.status is S.CAPTURED


async def test_capture_of_an_unpaid_payment_is_refused(world: World) -> None:
    payment = await world.create()
    with pytest.raises(FailedPreconditionError) as refused:
        await world.handlers.capture_payment(
            commands.CapturePayment(ORDER, payment.payment_id), world.uow()
        )
    assert refused.value.reason == "PAYMENT_NOT_AUTHORIZED"
    assert world.status(payment.payment_id) is S.REQUIRES_ACTION


async def test_capture_above_the_hold_is_invalid(world: World) -> None:
    payment = await world.authorized(1000)
    with pytest.raises(InvalidArgumentError):
        await world.handlers.capture_payment(
            commands.CapturePayment(ORDER, payment.payment_id, 1001), world.uow()
        )


async def test_provider_refusals_and_outages_are_told_apart(world: World) -> None:
    payment = await world.authorized()
    world.provider.failures.append(ProviderError("card declined", retryable=False, code="card"))
    with pytest.raises(FailedPreconditionError) as refused:
        await world.handlers.capture_payment(
            commands.CapturePayment(ORDER, payment.payment_id), world.uow()
        )
    assert refused.value.reason == "PROVIDER_CARD"
    world.provider.failures.append(ProviderError("timeout", retryable=True))
    with pytest.raises(UnavailableError):
        await world.handlers.capture_payment(
            commands.CapturePayment(ORDER, payment.payment_id), world.uow()
        )
    assert world.status(payment.payment_id) is S.AUTHORIZED


async def test_void_releases_the_hold_once(world: World) -> None:
    payment = await world.authorized()
    for _ in range(2):
        voided = await world.handlers.void_payment(
            commands.VoidPayment(ORDER, payment.payment_id, "order failed"), world.uow()
        )
        assert voided.status is S.VOIDED
    assert [c[0] for c in world.provider.calls].count("void") == 1
    assert world.events(payment.payment_id)[-1] == "payment.voided"
    assert world.events(payment.payment_id).count("payment.voided") == 1


async def test_void_of_a_captured_payment_is_refused(world: World) -> None:
    payment = await world.authorized()
    await world.handlers.capture_payment(
        commands.CapturePayment(ORDER, payment.payment_id), world.uow()
    )
    with pytest.raises(FailedPreconditionError) as refused:
        await world.handlers.void_payment(
            commands.VoidPayment(ORDER, payment.payment_id), world.uow()
        )
    assert refused.value.reason == "PAYMENT_NOT_VOIDABLE"


async def test_partial_then_full_refund(world: World) -> None:
    payment = await world.authorized(1000)
    await world.handlers.capture_payment(
        commands.CapturePayment(ORDER, payment.payment_id), world.uow()
    )
    part = await world.handlers.refund_payment(
        commands.RefundPayment(ORDER, payment.payment_id, 300, key="k1"), world.uow()
    )
    assert (part.status, part.amount_refunded_minor) == (S.PARTIALLY_REFUNDED, 300)
    with pytest.raises(InvalidArgumentError):
        await world.handlers.refund_payment(
            commands.RefundPayment(ORDER, payment.payment_id, 701), world.uow()
        )
    rest = await world.handlers.refund_payment(
        commands.RefundPayment(ORDER, payment.payment_id), world.uow()
    )
    assert (rest.status, rest.amount_refunded_minor) == (S.REFUNDED, 1000)
    again = await world.handlers.refund_payment(
        commands.RefundPayment(ORDER, payment.payment_id), world.uow()
    )
    assert again.status is S.REFUNDED
    refunds = [key for kind, key in world.provider.calls if kind == "refund"]
    assert refunds == [f"refund:{payment.payment_id}:k1", f"refund:{payment.payment_id}:300:700"]
    assert world.events(payment.payment_id).count("payment.refunded") == 2


async def test_refund_of_uncaptured_money_is_refused(world: World) -> None:
    payment = await world.authorized()
    with pytest.raises(FailedPreconditionError) as refused:
        await world.handlers.refund_payment(
            commands.RefundPayment(ORDER, payment.payment_id), world.uow()
        )
    assert refused.value.reason == "PAYMENT_NOT_CAPTURED"


# webhooks --------------------------------------------------------------------------------------
def webhook(
    event_id: str, ppid: str, status: str, amount: int, signature: str = "valid"
) -> commands.HandleWebhook:
    body = {"id": event_id, "object": ppid, "status": status, "amount": amount}
    return commands.HandleWebhook(
        provider="sandbox", body=json.dumps(body).encode(), headers={"X-Signature": signature}
    )


async def test_webhook_with_a_bad_signature_changes_nothing(world: World) -> None:
    payment = await world.create(700)
    with pytest.raises(UnauthenticatedError):
        await world.handlers.handle_webhook(
            webhook("evt_1", payment.provider_payment_id, "authorized", 700, "forged"), world.uow()
        )
    assert world.db.webhooks == {}
    assert world.status(payment.payment_id) is S.REQUIRES_ACTION


async def test_the_same_webhook_twice_applies_once(world: World) -> None:
    payment = await world.create(700)
    message = webhook("evt_1", payment.provider_payment_id, "authorized", 700)
    first = await world.handlers.handle_webhook(message, world.uow())
    second = await world.handlers.handle_webhook(message, world.uow())
    assert (first.duplicate, second.duplicate) == (False, True)
    assert world.status(payment.payment_id) is S.AUTHORIZED
    assert world.db.webhooks[("sandbox", "evt_1")]["outcome"] == "applied"
    assert world.events(payment.payment_id) == ["payment.requested", "payment.succeeded"]


async def test_a_webhook_ahead_of_our_state_rereads_the_provider(world: World) -> None:
    payment = await world.create(700)
    ppid = payment.provider_payment_id
    world.provider.authorize(ppid, 700)
    await world.provider.capture(ppid, 700, "elsewhere")
    result = await world.handlers.handle_webhook(
        webhook("evt_c", ppid, "refunded", 700), world.uow()
    )
    assert not result.duplicate
    assert world.db.webhooks[("sandbox", "evt_c")]["outcome"] == "refetched"
    assert world.status(payment.payment_id) is S.CAPTURED  # what the provider says, not the event
    assert world.events(payment.payment_id) == [
        "payment.requested",
        "payment.succeeded",
        "payment.captured",
    ]


async def test_a_stale_or_unknown_webhook_is_recorded_without_effect(world: World) -> None:
    payment = await world.authorized(700)
    ppid = payment.provider_payment_id
    await world.handlers.handle_webhook(webhook("evt_old", ppid, "requires_action", 0), world.uow())
    await world.handlers.handle_webhook(
        webhook("evt_x", "pi_unknown", "authorized", 1), world.uow()
    )
    assert world.db.webhooks[("sandbox", "evt_old")]["outcome"] == "stale"
    assert world.db.webhooks[("sandbox", "evt_x")]["outcome"] == "unmatched"
    assert world.status(payment.payment_id) is S.AUTHORIZED


# group closed, reconciliation ------------------------------------------------------------------
async def test_group_closed_marks_compensation_and_wakes_after_commit(world: World) -> None:
    payment = await world.authorized()
    message = group_events_pb2.GroupExpired(group_id=GROUP, reason="deadline passed")
    async with world.uow() as uow:
        await world.handlers.group_closed(message, uow)
        assert world.wakes == 0  # nothing before the commit
        assert world.db.closed_groups == {}
        await uow.commit()
    assert world.wakes == 1
    assert world.db.closed_groups == {GROUP: "group.expired: deadline passed"}
    assert world.db.rows[payment.payment_id].compensate_reason == "group.expired: deadline passed"


async def test_group_closed_rolled_back_wakes_nobody(world: World) -> None:
    await world.authorized()
    message = group_events_pb2.GroupCancelled(group_id=GROUP, reason="host cancelled")
    async with world.uow() as uow:
        await world.handlers.group_closed(message, uow)
    assert world.wakes == 0
    assert world.db.closed_groups == {}


async def test_order_failed_names_payments_of_the_group(world: World) -> None:
    payment = await world.authorized()
    message = order_events_pb2.OrderFailed(
        group_id=GROUP, payment_ids=[payment.payment_id], detail="merchant refused"
    )
    async with world.uow() as uow:
        await world.handlers.group_closed(message, uow)
        await uow.commit()
    assert world.db.rows[payment.payment_id].compensate_reason == "order.failed: merchant refused"


async def test_reconciliation_voids_holds_and_refunds_captures_of_a_closed_group(
    world: World,
) -> None:
    held = await world.authorized(1000, member=str(uuid.uuid4()))
    kept = await world.authorized(2000, member=str(uuid.uuid4()))
    await world.handlers.capture_payment(
        commands.CapturePayment(ORDER, kept.payment_id), world.uow()
    )
    unpaid = await world.create(3000, member=str(uuid.uuid4()))
    async with world.uow() as uow:
        await world.handlers.group_closed(
            group_events_pb2.GroupCancelled(group_id=GROUP, reason="host cancelled"), uow
        )
        await uow.commit()

    due = await world.handlers.claim_due_payments(commands.ClaimDuePayments(50), world.uow())
    assert set(due) == {held.payment_id, kept.payment_id, unpaid.payment_id}
    for payment_id in due:
        await world.handlers.reconcile_payment(commands.ReconcilePayment(payment_id), world.uow())
    assert world.status(held.payment_id) is S.VOIDED
    assert world.status(kept.payment_id) is S.REFUNDED
    assert world.status(unpaid.payment_id) is S.VOIDED
    assert ("refund", f"refund:{kept.payment_id}:compensation") in world.provider.calls
    # claimed payments are pushed out: a second claim right away finds nothing
    assert await world.handlers.claim_due_payments(commands.ClaimDuePayments(50), world.uow()) == []


async def test_a_payment_authorized_after_its_group_closed_is_due_at_once(world: World) -> None:
    payment = await world.create(800)
    async with world.uow() as uow:
        await world.handlers.group_closed(
            group_events_pb2.GroupExpired(group_id=GROUP, reason="deadline"), uow
        )
        await uow.commit()
    world.wakes = 0
    await world.handlers.handle_webhook(
        webhook("evt_late", payment.provider_payment_id, "authorized", 800), world.uow()
    )
    assert world.wakes == 1
    row = world.db.rows[payment.payment_id]
    assert row.next_check_at is not None
    assert row.next_check_at <= datetime.now(UTC)


async def test_holds_about_to_lapse_are_announced_once(world: World) -> None:
    payment = await world.authorized(500)
    world.db.rows[payment.payment_id].payment.authorization_expires_at = datetime.now(
        UTC
    ) + timedelta(hours=1)
    warn = commands.WarnExpiringAuthorizations(50)
    assert await world.handlers.warn_expiring_authorizations(warn, world.uow()) == 1
    assert await world.handlers.warn_expiring_authorizations(warn, world.uow()) == 0
    assert world.events(payment.payment_id).count("payment.authorization_expiring") == 1
