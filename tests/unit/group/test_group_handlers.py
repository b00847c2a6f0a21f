"""The group service layer against in-memory fakes: commands, consumed events and the
expiry scheduler's duties, with the events each one publishes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import CartLine, FallbackPolicy, Group, MemberStatus, NewMember
from group_svc.domain.split import ShareSpec, SplitMode
from group_svc.service_layer import commands as c
from group_svc.service_layer.handlers import GroupHandlers
from mppo.group.v1 import group_events_pb2 as ev
from mppo.order.v1 import order_events_pb2, order_pb2
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from mppo.platform.identity import Caller
from tests.support.catalogue import priced_cart
from tests.unit.group.fakes import Clock, FakeOrders, FakePayments, FakeUnitOfWork

HOST = Caller(user_id="host")
GUEST = Caller(user_id="guest-1")
SERVICE = Caller(service="notification")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def payments() -> FakePayments:
    return FakePayments()


@pytest.fixture
def orders() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def handlers(clock: Clock, payments: FakePayments, orders: FakeOrders) -> GroupHandlers:
    return GroupHandlers(
        payments=payments,
        orders=orders,
        host_grace=timedelta(seconds=60),
        reminder_lead=timedelta(seconds=30),
        clock=clock,
    )


def new_member(i: int) -> NewMember:
    return NewMember(f"Guest {i}", f"g{i}@example.com", "", f"guest-{i}", ShareSpec())


def create_cmd(
    clock: Clock,
    total: int = 1001,
    guests: int = 3,
    policy: FallbackPolicy = FallbackPolicy.CANCEL,
    deadline_in: float = 120,
) -> c.CreateGroup:
    lines, fees = priced_cart(total)
    return c.CreateGroup(
        caller=HOST,
        merchant_id="merchant-1",
        currency_code="USD",
        items=[
            CartLine(ln.line_id, ln.sku, ln.name, ln.quantity, ln.unit_price_minor) for ln in lines
        ],
        fees_minor=fees,
        tax_minor=0,
        tip_minor=0,
        split_mode=SplitMode.EQUAL,
        fallback_policy=policy,
        deadline=clock() + timedelta(seconds=deadline_in),
        host=NewMember("Host", "host@example.com", "", "", ShareSpec()),
        members=[new_member(i) for i in range(1, guests + 1)],
    )


async def create(handlers: GroupHandlers, uow: FakeUnitOfWork, cmd: c.CreateGroup) -> Group:
    quoted = await handlers.quote_cart(cmd)
    async with uow:
        group = await handlers.create_group(quoted, uow)
        await uow.commit()
    return group


async def opened(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, **kwargs: object
) -> Group:
    group = await create(handlers, uow, create_cmd(clock, **kwargs))  # type: ignore[arg-type]
    return await handlers.open_group(c.OpenGroup(HOST, group.group_id), uow)


async def pay(
    handlers: GroupHandlers,
    uow: FakeUnitOfWork,
    payments: FakePayments,
    group: Group,
    member_index: int,
    attempt: int = 1,
    *,
    captured: bool = False,
) -> None:
    member = group.members[member_index]
    intent = payments.intents[(group.group_id, member.member_id, attempt)]
    async with uow:
        await handlers.payment_succeeded(
            payment_events_pb2.PaymentSucceeded(
                payment_id=intent.payment_id,
                group_id=group.group_id,
                member_id=member.member_id,
                attempt=attempt,
                amount=intent.amount,
                captured=captured,
            ),
            uow,
        )
        await uow.commit()


async def load(uow: FakeUnitOfWork, group_id: str) -> Group:
    async with uow:
        group = await uow.groups.get(group_id)
    assert group is not None
    return group


# ---- commands ----------------------------------------------------------------------------


async def test_create_group_splits_the_cart_and_publishes_created_and_members(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    group = await create(handlers, uow, create_cmd(clock))
    assert group.status is GroupStatus.DRAFT
    assert group.host_user_id == "host"
    assert [m.share_minor for m in group.members] == [251, 250, 250, 250]
    assert uow.event_types() == ["group.created"] + ["member.added"] * 4
    (created,) = uow.payloads("group.created")
    assert isinstance(created, ev.GroupCreated)
    assert created.total.amount_minor == 1001


async def test_only_users_create_and_duplicates_are_refused(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    with pytest.raises(PermissionDeniedError):
        await create(handlers, uow, replace(create_cmd(clock), caller=SERVICE))
    dup = create_cmd(clock, guests=2)
    dup = replace(dup, members=[dup.members[0], dup.members[0]])
    with pytest.raises(InvalidArgumentError) as err:
        await create(handlers, uow, dup)
    assert "members[1].email" in {v.field for v in err.value.violations}
    assert uow.published == []
    assert uow.store.groups == {}


async def test_only_the_host_changes_a_group_and_outsiders_do_not_see_it(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    group = await create(handlers, uow, create_cmd(clock))
    async with uow:
        with pytest.raises(PermissionDeniedError):
            await handlers.add_members(c.AddMembers(GUEST, group.group_id, [new_member(9)]), uow)
        with pytest.raises(NotFoundError):
            await handlers.get_group(c.GetGroup(Caller(user_id="stranger"), group.group_id), uow)
        seen = await handlers.get_group(c.GetGroup(SERVICE, group.group_id), uow)
        assert seen.group_id == group.group_id
        added = await handlers.add_members(c.AddMembers(HOST, group.group_id, [new_member(9)]), uow)
        await uow.commit()
    assert len(added.members) == 5
    assert uow.event_types()[-1] == "member.added"
    async with uow:
        with pytest.raises(PermissionDeniedError):
            await handlers.group_contacts(c.GetGroupContacts(HOST, group.group_id), uow)
        contacts = await handlers.group_contacts(c.GetGroupContacts(SERVICE, group.group_id), uow)
    assert [m.email for m in contacts][-1] == "g9@example.com"


async def test_open_group_requests_one_intent_per_member_and_publishes_opened_once(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock)
    assert group.status is GroupStatus.OPEN
    assert all(group.current_attempt(m) for m in group.members)
    assert payments.create_calls == 4
    again = await handlers.open_group(c.OpenGroup(HOST, group.group_id), uow)
    assert again.status is GroupStatus.OPEN
    assert payments.create_calls == 4  # nothing missing: nothing asked again
    (event,) = uow.payloads("group.opened")
    assert isinstance(event, ev.GroupOpened)
    assert len(event.invitations) == 4
    with pytest.raises(PermissionDeniedError):
        await handlers.open_group(c.OpenGroup(GUEST, group.group_id), uow)


async def test_open_group_resumes_after_the_payment_service_fails_half_way(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await create(handlers, uow, create_cmd(clock))
    payments.fail_next = 1
    with pytest.raises(UnavailableError):
        await handlers.open_group(c.OpenGroup(HOST, group.group_id), uow)
    frozen = await load(uow, group.group_id)
    assert frozen.status is GroupStatus.DRAFT
    assert frozen.frozen_at is not None
    async with uow:
        with pytest.raises(FailedPreconditionError):
            await handlers.add_members(c.AddMembers(HOST, group.group_id, [new_member(9)]), uow)
    reopened = await handlers.open_group(c.OpenGroup(HOST, group.group_id), uow)
    assert reopened.status is GroupStatus.OPEN
    assert len(payments.intents) == 4
    assert len(uow.payloads("group.opened")) == 1


async def test_cancel_lists_the_payments_and_a_pending_group_cannot_be_cancelled(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500)
    cancelled = await handlers.cancel_group(c.CancelGroup(HOST, group.group_id), uow)
    assert cancelled.status is GroupStatus.CANCELLED
    (event,) = uow.payloads("group.cancelled")
    assert isinstance(event, ev.GroupCancelled)
    assert set(event.payment_ids) == set(cancelled.payment_ids)
    assert event.actor == "user:host"
    other = await opened(handlers, uow, clock, guests=1, total=500)
    for i in range(2):
        await pay(handlers, uow, payments, other, i)
    with pytest.raises(FailedPreconditionError):
        await handlers.cancel_group(c.CancelGroup(HOST, other.group_id), uow)


# ---- consumed events ---------------------------------------------------------------------


async def test_member_paid_says_whether_the_provider_captured_at_once(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    """A held card and a Razorpay link (captured at once): the notification tells them apart."""
    group = await opened(handlers, uow, clock)
    await pay(handlers, uow, payments, group, 0)
    await pay(handlers, uow, payments, group, 1, captured=True)
    held, charged = uow.payloads("member.paid")
    assert isinstance(held, ev.MemberPaid)
    assert isinstance(charged, ev.MemberPaid)
    assert (held.member_id, held.captured) == (group.members[0].member_id, False)
    assert (charged.member_id, charged.captured) == (group.members[1].member_id, True)


async def test_payments_finalize_the_group_once_and_duplicates_change_nothing(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock)
    for i in range(4):
        await pay(handlers, uow, payments, group, i)
    published = len(uow.published)
    await pay(handlers, uow, payments, group, 0)  # a redelivery the inbox did not catch
    assert len(uow.published) == published
    final = await load(uow, group.group_id)
    assert final.status is GroupStatus.PENDING
    assert {m.status for m in final.members} == {MemberStatus.PAID}
    paid = uow.payloads("member.paid")
    assert [p.remaining_members for p in paid] == [3, 2, 1, 0]  # type: ignore[attr-defined]
    assert len(uow.payloads("group.fully_paid")) == 1
    (finalized,) = uow.payloads("group.finalized")
    assert isinstance(finalized, ev.GroupFinalized)
    assert sorted(s.amount.amount_minor for s in finalized.shares) == [250, 250, 250, 251]
    assert uow.store.releases == {}
    # the order is placed
    async with uow:
        await handlers.order_confirmed(
            order_events_pb2.OrderConfirmed(order_id="o-1", group_id=group.group_id), uow
        )
        await uow.commit()
    assert (await load(uow, group.group_id)).status is GroupStatus.CONFIRMED
    (confirmed,) = uow.payloads("group.confirmed")
    assert isinstance(confirmed, ev.GroupConfirmed)
    assert confirmed.order_id == "o-1"


async def test_a_failed_order_cancels_the_pending_group(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500)
    for i in range(2):
        await pay(handlers, uow, payments, group, i)
    async with uow:
        await handlers.order_failed(
            order_events_pb2.OrderFailed(
                order_id="o-2",
                group_id=group.group_id,
                reason=order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED,
                detail="pay-123: PROVIDER_CARD_DECLINED: Your card was declined.",
            ),
            uow,
        )
        await uow.commit()
    final = await load(uow, group.group_id)
    assert final.status is GroupStatus.CANCELLED
    (event,) = uow.payloads("group.cancelled")
    assert isinstance(event, ev.GroupCancelled)
    # members read the reason: the cause in words, not the detail naming a member's payment
    assert (event.actor, event.reason) == (
        "system:orders",
        "order failed: a share could not be captured",
    )
    assert final.close_reason == event.reason
    assert len(event.payment_ids) == 2


async def test_a_declined_member_retries_and_the_stale_attempt_is_released(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=600)
    guest = group.members[1]
    first = payments.intents[(group.group_id, guest.member_id, 1)]
    async with uow:
        await handlers.payment_failed(
            payment_events_pb2.PaymentFailed(
                payment_id=first.payment_id,
                group_id=group.group_id,
                member_id=guest.member_id,
                attempt=1,
            ),
            uow,
        )
        await uow.commit()
    with pytest.raises(PermissionDeniedError):
        await handlers.retry_payment(
            c.RetryPayment(Caller(user_id="guest-2"), group.group_id, guest.member_id), uow
        )
    retried = await handlers.retry_payment(
        c.RetryPayment(GUEST, group.group_id, guest.member_id), uow
    )
    assert retried.members[1].attempt == 2
    assert retried.members[1].status is MemberStatus.AWAITING_PAYMENT
    await pay(handlers, uow, payments, group, 1, attempt=2)
    await pay(handlers, uow, payments, group, 0)
    await pay(handlers, uow, payments, group, 2)
    assert (await load(uow, group.group_id)).status is GroupStatus.PENDING
    await pay(handlers, uow, payments, group, 1, attempt=1)  # the stale one "succeeds" late
    assert list(uow.store.releases) == [first.payment_id]
    released = await handlers.release_payments(c.ReleasePayments(), uow)
    assert (released, payments.released) == (1, [first.payment_id])
    assert uow.store.releases[first.payment_id]["status"] == "DONE"


# ---- the expiry scheduler ----------------------------------------------------------------


async def expire_round(handlers: GroupHandlers, uow: FakeUnitOfWork) -> list[str]:
    return await handlers.expire_due_groups(c.ExpireDueGroups(), uow)


async def test_cancel_policy_expires_once_and_a_late_payment_is_released_once(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=900)
    await pay(handlers, uow, payments, group, 1)
    assert await expire_round(handlers, uow) == []
    assert (await load(uow, group.group_id)).status is GroupStatus.OPEN
    clock.advance(121)
    assert await expire_round(handlers, uow) == []
    assert await expire_round(handlers, uow) == []  # nothing due any more
    expired = await load(uow, group.group_id)
    assert (expired.status, expired.close_reason) == (GroupStatus.EXPIRED, "deadline passed")
    (event,) = uow.payloads("group.expired")
    assert isinstance(event, ev.GroupExpired)
    assert set(event.payment_ids) == set(expired.payment_ids)
    # a payment after the expiry is not kept; the payment service refuses to void it (it
    # voided the holds on group.expired already): final, recorded, never retried
    late = payments.intents[(group.group_id, group.members[2].member_id, 1)]
    payments.release_errors[late.payment_id] = FailedPreconditionError("already voided")
    await pay(handlers, uow, payments, group, 2)
    assert await handlers.release_payments(c.ReleasePayments(), uow) == 0
    row = uow.store.releases[late.payment_id]
    assert row["status"] == "REFUSED"
    assert "already voided" in row["last_error"]
    assert await handlers.release_payments(c.ReleasePayments(), uow) == 0
    assert uow.store.releases[late.payment_id]["attempts"] == 0


async def test_an_unavailable_payment_service_is_retried_with_backoff(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500)
    clock.advance(121)
    await expire_round(handlers, uow)
    late = payments.intents[(group.group_id, group.members[1].member_id, 1)]
    payments.release_errors[late.payment_id] = UnavailableError("payment service down")
    await pay(handlers, uow, payments, group, 1)
    cmd = c.ReleasePayments(backoff_seconds=10)
    assert await handlers.release_payments(cmd, uow) == 0
    row = uow.store.releases[late.payment_id]
    assert (row["status"], row["attempts"]) == ("PENDING", 1)
    assert row["next_attempt_at"] == clock() + timedelta(seconds=10)
    await handlers.release_payments(cmd, uow)  # backing off: not tried again yet
    assert uow.store.releases[late.payment_id]["attempts"] == 1
    clock.advance(10)
    await handlers.release_payments(cmd, uow)
    row = uow.store.releases[late.payment_id]
    assert (row["attempts"], row["next_attempt_at"]) == (2, clock() + timedelta(seconds=20))
    del payments.release_errors[late.payment_id]
    clock.advance(20)
    assert await handlers.release_payments(cmd, uow) == 1
    assert uow.store.releases[late.payment_id]["status"] == "DONE"
    assert payments.released == [late.payment_id]


async def test_host_pays_remaining_moves_the_rest_to_the_host_then_expires_after_grace(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(
        handlers, uow, clock, policy=FallbackPolicy.HOST_PAYS_REMAINING, guests=3, total=1001
    )
    for i in (1, 2):
        await pay(handlers, uow, payments, group, i)
    clock.advance(121)
    payments.fail_next = 1
    (needs_intent,) = await expire_round(handlers, uow)
    assert needs_intent == group.group_id
    with pytest.raises(UnavailableError):  # the scheduler retries it next round
        await handlers.complete_intents(c.CompleteIntents(group.group_id, "system:scheduler"), uow)
    assert uow.payloads("group.host_fallback") == []
    assert await expire_round(handlers, uow) == [group.group_id]
    covered = await handlers.complete_intents(
        c.CompleteIntents(group.group_id, "system:scheduler"), uow
    )
    host = covered.host
    assert (host.share_minor, host.attempt) == (501, 2)
    assert covered.members[3].status is MemberStatus.COVERED_BY_HOST
    (fallback,) = uow.payloads("group.host_fallback")
    assert isinstance(fallback, ev.HostFallbackRequested)
    intent = payments.intents[(group.group_id, host.member_id, 2)]
    assert (fallback.amount.amount_minor, fallback.payment_id) == (501, intent.payment_id)
    assert await expire_round(handlers, uow) == []
    clock.advance(61)  # the grace period passes unpaid
    assert await expire_round(handlers, uow) == []
    final = await load(uow, group.group_id)
    assert (final.status, final.close_reason) == (GroupStatus.EXPIRED, "grace period passed")
    assert len(uow.payloads("group.expired")) == 1
    assert len(uow.payloads("group.host_fallback")) == 1


async def test_reminders_go_out_once_per_unpaid_member(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=900, deadline_in=40)
    await pay(handlers, uow, payments, group, 1)

    async def remind() -> int:
        async with uow:
            sent = await handlers.send_reminders(c.SendReminders(), uow)
            await uow.commit()
        return sent

    assert await remind() == 0  # not before half of the payment window
    clock.advance(20)
    assert await remind() == 2
    assert await remind() == 0
    reminded = {p.member_id for p in uow.payloads("group.reminder_due")}  # type: ignore[attr-defined]
    assert reminded == {group.members[0].member_id, group.members[2].member_id}


# ---- carts are priced by the merchant before the group exists -----------------------------


async def test_a_cart_the_catalogue_prices_differently_is_refused_before_any_group_exists(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, orders: FakeOrders
) -> None:
    cheap = create_cmd(clock)
    cheap = replace(cheap, items=[replace(cheap.items[0], unit_price_minor=1)])  # a 1-cent item
    with pytest.raises(InvalidArgumentError) as err:
        await handlers.quote_cart(cheap)
    assert {v.field for v in err.value.violations} == {"items[0].unit_price_minor"}
    orders.fail_next = 1
    with pytest.raises(UnavailableError):
        await handlers.quote_cart(create_cmd(clock))
    # nothing is created from a cart the merchant has not priced
    async with uow:
        with pytest.raises(FailedPreconditionError):
            await handlers.create_group(create_cmd(clock), uow)
        quoted = await handlers.quote_cart(create_cmd(clock))
        with pytest.raises(FailedPreconditionError):  # the quote is for other lines
            await handlers.create_group(replace(quoted, items=cheap.items), uow)
    assert uow.store.groups == {}
    assert (await create(handlers, uow, create_cmd(clock))).status is GroupStatus.DRAFT


# ---- unwanted payment links are closed before the change is committed ----------------------


def committed_status(uow: FakeUnitOfWork, group_id: str) -> tuple[GroupStatus, bool]:
    """The stored group's status and whether its host fallback was stored."""
    stored = uow.store.groups[group_id]
    return stored.status, stored.fallback_at is not None


async def test_host_pays_remaining_closes_the_members_links_before_the_fallback_is_committed(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(
        handlers, uow, clock, policy=FallbackPolicy.HOST_PAYS_REMAINING, guests=3, total=1001
    )
    await pay(handlers, uow, payments, group, 1)
    unpaid = {
        payments.intents[(group.group_id, group.members[i].member_id, 1)].payment_id
        for i in (0, 2, 3)
    }
    seen: list[tuple[GroupStatus, bool]] = []
    payments.on_close = lambda _: seen.append(committed_status(uow, group.group_id))
    clock.advance(121)
    # the payment service cannot close them yet: nothing changes, the next round retries
    for payment_id in unpaid:
        payments.close_errors[payment_id] = UnavailableError("payment service down")
    assert await expire_round(handlers, uow) == []
    assert committed_status(uow, group.group_id) == (GroupStatus.OPEN, False)
    payments.close_errors.clear()
    assert await expire_round(handlers, uow) == [group.group_id]
    assert set(payments.closed) == unpaid  # the host's first link as well: a new one replaces it
    assert set(seen) == {(GroupStatus.OPEN, False)}  # every close came before the fallback
    covered = await handlers.complete_intents(
        c.CompleteIntents(group.group_id, "system:scheduler"), uow
    )
    assert [m.status for m in covered.members[2:]] == [MemberStatus.COVERED_BY_HOST] * 2
    assert len(uow.payloads("group.host_fallback")) == 1
    # the grace period passes: the host's fallback link is closed before group.expired
    host_link = payments.intents[(group.group_id, covered.host.member_id, 2)].payment_id
    not_expired_yet: list[bool] = []
    payments.on_close = lambda _: not_expired_yet.append(uow.payloads("group.expired") == [])
    clock.advance(61)
    await expire_round(handlers, uow)
    assert (payments.closed[-1], not_expired_yet) == (host_link, [True])
    assert (await load(uow, group.group_id)).status is GroupStatus.EXPIRED


async def test_cancel_closes_every_open_link_first_and_waits_for_the_payment_service(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=900)
    await pay(handlers, uow, payments, group, 1)
    unpaid = {
        payments.intents[(group.group_id, group.members[i].member_id, 1)].payment_id for i in (0, 2)
    }
    payments.close_errors[min(unpaid)] = UnavailableError("payment service down")
    with pytest.raises(UnavailableError):
        await handlers.cancel_group(c.CancelGroup(HOST, group.group_id), uow)
    assert committed_status(uow, group.group_id) == (GroupStatus.OPEN, False)
    assert uow.payloads("group.cancelled") == []
    payments.close_errors.clear()
    seen: list[bool] = []
    payments.on_close = lambda _: seen.append(uow.payloads("group.cancelled") == [])
    cancelled = await handlers.cancel_group(c.CancelGroup(HOST, group.group_id), uow)
    assert cancelled.status is GroupStatus.CANCELLED
    assert set(payments.closed) == unpaid  # the paid share is released on group.cancelled
    assert seen == [True, True]
    assert len(uow.payloads("group.cancelled")) == 1


async def test_the_cancel_deadline_closes_the_links_before_group_expired(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500)
    seen: list[bool] = []
    payments.on_close = lambda _: seen.append(uow.payloads("group.expired") == [])
    clock.advance(121)
    await expire_round(handlers, uow)
    assert (await load(uow, group.group_id)).status is GroupStatus.EXPIRED
    assert set(payments.closed) == set(group.payment_ids)
    assert seen == [True, True]


async def test_a_retry_closes_the_link_it_replaces(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500)
    guest = group.members[1]
    first = payments.intents[(group.group_id, guest.member_id, 1)]
    async with uow:
        await handlers.payment_failed(
            payment_events_pb2.PaymentFailed(
                payment_id=first.payment_id,
                group_id=group.group_id,
                member_id=guest.member_id,
                attempt=1,
            ),
            uow,
        )
        await uow.commit()
    seen: list[int] = []
    payments.on_close = lambda _: seen.append(uow.store.groups[group.group_id].members[1].attempt)
    retried = await handlers.retry_payment(
        c.RetryPayment(GUEST, group.group_id, guest.member_id), uow
    )
    assert retried.members[1].attempt == 2
    assert (payments.closed, seen) == ([first.payment_id], [1])


async def test_a_payment_that_beat_the_closing_link_is_released_as_before(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(
        handlers, uow, clock, policy=FallbackPolicy.HOST_PAYS_REMAINING, guests=1, total=500
    )
    racing = payments.intents[(group.group_id, group.members[1].member_id, 1)]
    payments.paid_first.add(racing.payment_id)  # paid on the page just before it closed
    clock.advance(121)
    assert await expire_round(handlers, uow) == [group.group_id]
    await pay(handlers, uow, payments, group, 1)  # its payment.succeeded arrives late
    assert list(uow.store.releases) == [racing.payment_id]
    assert await handlers.release_payments(c.ReleasePayments(), uow) == 1
    assert payments.released == [racing.payment_id]
