"""Holds that never lapse and a provider per member (issue 14, parts 1 and 2), against the
in-memory fakes: deadlines beyond the shortest hold window of the providers in play are
refused, providers are checked against those configured, a member's provider reaches the
payment service (and a join naming another one replaces the unpaid link), and a hold about to
lapse before the group can complete makes it due at the latest safe moment (never earlier
than now), its history saying why; one lapsing after changes nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from group_svc.adapters.proto_mapping import group_to_proto
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import FallbackPolicy, MemberStatus
from group_svc.entrypoints import parsing
from group_svc.service_layer import commands as c
from group_svc.service_layer.handlers import GroupHandlers
from mppo.common.v1 import cart_pb2
from mppo.group.v1 import group_pb2, group_service_pb2
from mppo.payment.v1 import payment_events_pb2, payment_pb2
from mppo.platform.errors import InvalidArgumentError
from mppo.platform.providers import ProviderChoice
from tests.unit.group.fakes import Clock, FakeOrders, FakePayments, FakeUnitOfWork
from tests.unit.group.test_group_handlers import (
    GUEST,
    HOST,
    clock,
    create,
    create_cmd,
    expire_round,
    load,
    new_member,
    opened,
    orders,
    pay,
    payments,
    uow,
)

__all__ = ["clock", "orders", "payments", "uow"]  # the fixtures, shared

DAY = 86400.0


def make_handlers(
    clock: Clock,
    payments: FakePayments,
    orders: FakeOrders,
    default_deadline: timedelta = timedelta(hours=24),
) -> GroupHandlers:
    return GroupHandlers(
        payments=payments,
        orders=orders,
        host_grace=GRACE,
        reminder_lead=timedelta(seconds=30),
        clock=clock,
        hold_margin=MARGIN,
        providers=ProviderChoice(configured=("sandbox", "paypal", "razorpay"), default="sandbox"),
        default_deadline=default_deadline,
    )


@pytest.fixture
def handlers(clock: Clock, payments: FakePayments, orders: FakeOrders) -> GroupHandlers:
    return make_handlers(clock, payments, orders)


async def test_a_deadline_beyond_the_shortest_hold_in_play_is_refused(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    # the sandbox (Stripe-like) holds 7 days: 6 days is fine, 8 days is not
    await create(handlers, uow, create_cmd(clock, deadline_in=6 * DAY))
    with pytest.raises(InvalidArgumentError) as refused:
        await create(handlers, uow, create_cmd(clock, deadline_in=8 * DAY))
    assert [v.field for v in refused.value.violations] == ["deadline"]
    # a guest on Razorpay brings the window down to 3 days
    cmd = create_cmd(clock, deadline_in=4 * DAY)
    cmd = replace(cmd, members=[replace(cmd.members[0], provider="razorpay")])
    with pytest.raises(InvalidArgumentError) as refused:
        await create(handlers, uow, cmd)
    (violation,) = refused.value.violations
    assert violation.field == "deadline"
    assert "razorpay" in violation.description


async def test_the_deadline_leaves_the_hold_policy_its_margin_and_the_host_his_grace(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    # a share paid the moment the group is created lapses 7 days later; the group must complete
    # the hold policy's margin (1 hour here) before that, or it would have to end early
    margin, grace = MARGIN.total_seconds(), GRACE.total_seconds()
    await create(handlers, uow, create_cmd(clock, deadline_in=7 * DAY - margin))
    with pytest.raises(InvalidArgumentError) as refused:
        await create(handlers, uow, create_cmd(clock, deadline_in=7 * DAY - margin + 1))
    (violation,) = refused.value.violations
    assert violation.field == "deadline"
    assert violation.description == (
        "at most 6 days 23 hours 50 minutes from now: sandbox holds a payment 7 days,"
        " and the group must complete 10 minutes before a hold lapses"
    )
    # with HOST_PAYS_REMAINING the host's grace comes after the deadline: it must fit too
    host_pays = FallbackPolicy.HOST_PAYS_REMAINING
    await create(
        handlers, uow, create_cmd(clock, policy=host_pays, deadline_in=7 * DAY - margin - grace)
    )
    with pytest.raises(InvalidArgumentError) as refused:
        await create(
            handlers, uow, create_cmd(clock, policy=host_pays, deadline_in=7 * DAY - margin)
        )
    (violation,) = refused.value.violations
    assert violation.description == (
        "at most 6 days 23 hours 49 minutes from now: sandbox holds a payment 7 days, and after"
        " the deadline the host has 1 minute of grace to pay the rest and the group must"
        " complete 10 minutes before a hold lapses"
    )


async def test_adding_a_member_whose_provider_holds_too_briefly_names_that_provider(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    group = await create(handlers, uow, create_cmd(clock, guests=1, deadline_in=4 * DAY))
    guests = [new_member(7), replace(new_member(8), provider="razorpay")]
    async with uow:
        with pytest.raises(InvalidArgumentError) as refused:
            await handlers.add_members(c.AddMembers(HOST, group.group_id, guests), uow)
    (violation,) = refused.value.violations
    assert violation.field == "members[1].provider"
    assert "razorpay holds a payment 3 days" in violation.description
    assert len((await load(uow, group.group_id)).members) == 2  # nobody was added


async def test_a_provider_that_is_not_configured_is_refused(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    cmd = create_cmd(clock, guests=2)
    cmd = replace(cmd, members=[cmd.members[0], replace(cmd.members[1], provider="stripe")])
    with pytest.raises(InvalidArgumentError) as refused:
        await create(handlers, uow, cmd)
    assert [v.field for v in refused.value.violations] == ["members[1].provider"]


async def test_each_member_pays_with_their_provider_and_a_join_can_change_it(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    cmd = create_cmd(clock, guests=2)
    cmd = replace(
        cmd,
        host=replace(cmd.host, provider="paypal"),
        members=[replace(cmd.members[0], provider="razorpay"), cmd.members[1]],
    )
    group = await create(handlers, uow, cmd)
    group = await handlers.open_group(c.OpenGroup(cmd.caller, group.group_id), uow)
    asked = {member: p for (_, member, _), p in payments.providers.items()}
    host, guest, other = (m.member_id for m in group.members)
    assert asked == {host: "paypal", guest: "razorpay", other: ""}
    # the first guest joins naming PayPal: the Razorpay link is closed, a PayPal one issued
    first = payments.intents[(group.group_id, guest, 1)]
    joined = await handlers.join_with_provider(
        c.JoinGroup(GUEST, group.group_id, group.members[1].invite_token, "paypal"), uow
    )
    member = joined.member(guest)
    assert (member.provider, member.attempt, member.user_id) == ("paypal", 2, GUEST.user_id)
    assert payments.closed == [first.payment_id]
    assert payments.providers[(group.group_id, guest, 2)] == "paypal"
    assert (await load(uow, group.group_id)).current_attempt(member) is not None


MARGIN = timedelta(minutes=10)
GRACE = timedelta(seconds=60)


def expiring(
    payments: FakePayments, group_id: str, member_id: str, lapses_at: datetime
) -> payment_events_pb2.AuthorizationExpiring:
    intent = payments.intents[(group_id, member_id, 1)]
    lapses = Timestamp()
    lapses.FromDatetime(lapses_at)
    return payment_events_pb2.AuthorizationExpiring(
        payment_id=intent.payment_id, group_id=group_id, authorization_expire_time=lapses
    )


async def warn(
    handlers: GroupHandlers, uow: FakeUnitOfWork, warning: payment_events_pb2.AuthorizationExpiring
) -> None:
    async with uow:
        await handlers.authorization_expiring(warning, uow)
        await uow.commit()


async def history_of(uow: FakeUnitOfWork, group_id: str) -> list[dict[str, object]]:
    async with uow:
        return list(await uow.groups.history(group_id))


@pytest.mark.parametrize("after_deadline", [MARGIN, MARGIN + timedelta(days=1)])
async def test_a_hold_lapsing_once_the_group_can_complete_changes_nothing(
    handlers: GroupHandlers,
    uow: FakeUnitOfWork,
    clock: Clock,
    payments: FakePayments,
    after_deadline: timedelta,
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=900, deadline_in=7200)
    await pay(handlers, uow, payments, group, 1)
    paid = await load(uow, group.group_id)
    lapses_at = paid.deadline + after_deadline  # at or after deadline + margin
    await warn(
        handlers, uow, expiring(payments, group.group_id, group.members[1].member_id, lapses_at)
    )
    still = await load(uow, group.group_id)
    assert still.version == paid.version
    assert (still.status, still.deadline, still.due_reason) == (
        GroupStatus.OPEN,
        paid.deadline,
        "",
    )
    assert [h["to_status"] for h in await history_of(uow, group.group_id)] == [
        GroupStatus.DRAFT,
        GroupStatus.OPEN,
    ]
    # the group runs to its own deadline, not a second less
    clock.now = paid.deadline - timedelta(seconds=1)
    await expire_round(handlers, uow)
    assert (await load(uow, group.group_id)).status is GroupStatus.OPEN
    clock.now = paid.deadline
    await expire_round(handlers, uow)
    expired = await load(uow, group.group_id)
    assert (expired.status, expired.close_reason) == (GroupStatus.EXPIRED, "deadline passed")


async def test_a_hold_lapsing_at_the_deadline_makes_the_group_due_margin_before_not_now(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    # the reviewer's case: the hold lapses exactly at the deadline, two hours away
    group = await opened(handlers, uow, clock, guests=2, total=900, deadline_in=7200)
    await pay(handlers, uow, payments, group, 1)
    deadline = (await load(uow, group.group_id)).deadline
    warning = expiring(payments, group.group_id, group.members[1].member_id, deadline)
    await warn(handlers, uow, warning)
    moved = await load(uow, group.group_id)
    assert moved.status is GroupStatus.OPEN
    assert moved.deadline == deadline - MARGIN  # the latest safe moment, not now
    assert moved.deadline > clock()
    assert "Guest 1" in moved.due_reason
    history = await history_of(uow, group.group_id)
    row = history[-1]
    assert (row["from_status"], row["to_status"], row["actor"]) == (
        GroupStatus.OPEN,
        GroupStatus.OPEN,
        "system:holds",
    )
    assert f"lapses at {deadline:%Y-%m-%d %H:%M} UTC" in str(row["reason"])
    assert f"due at {deadline - MARGIN:%Y-%m-%d %H:%M:%S} UTC" in str(row["reason"])
    assert "applies now" not in str(row["reason"])
    # the warning again (redelivered) changes nothing
    await warn(handlers, uow, warning)
    assert (await load(uow, group.group_id)).version == moved.version

    # the group keeps its time up to the safe moment, then expires with the hold as reason
    clock.now = moved.deadline - timedelta(seconds=1)
    await expire_round(handlers, uow)
    assert (await load(uow, group.group_id)).status is GroupStatus.OPEN
    clock.now = moved.deadline
    assert await expire_round(handlers, uow) == []
    expired = await load(uow, group.group_id)
    assert expired.status is GroupStatus.EXPIRED
    assert expired.close_reason == moved.due_reason
    history = await history_of(uow, group.group_id)
    assert history[-1]["reason"] == expired.close_reason
    assert history[-1]["changed_at"] == deadline - MARGIN


async def test_a_hold_lapsing_within_the_margin_applies_the_fallback_now(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=900, deadline_in=3600)
    await pay(handlers, uow, payments, group, 1)
    lapses_at = clock() + MARGIN / 2  # too soon for any later moment to be safe
    await warn(
        handlers, uow, expiring(payments, group.group_id, group.members[1].member_id, lapses_at)
    )
    due = await load(uow, group.group_id)
    assert due.deadline == clock()
    assert await expire_round(handlers, uow) == []  # due now, not in an hour
    expired = await load(uow, group.group_id)
    assert expired.status is GroupStatus.EXPIRED
    assert "lapses at" in expired.close_reason
    assert "Guest 1" in expired.close_reason
    reasons = [str(h["reason"]) for h in await history_of(uow, group.group_id)]
    assert any("the fallback applies now" in r for r in reasons)
    assert reasons[-1] == expired.close_reason


async def test_host_pays_remaining_leaves_the_host_their_grace_before_the_margin(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(
        handlers,
        uow,
        clock,
        guests=2,
        total=900,
        deadline_in=7200,
        policy=FallbackPolicy.HOST_PAYS_REMAINING,
    )
    await pay(handlers, uow, payments, group, 1)
    deadline = (await load(uow, group.group_id)).deadline
    guest = group.members[1].member_id
    # lapsing at deadline + grace + margin: the host can still pay and the order capture
    await warn(handlers, uow, expiring(payments, group.group_id, guest, deadline + GRACE + MARGIN))
    assert (await load(uow, group.group_id)).deadline == deadline
    # lapsing at deadline + margin: the host's grace must end by then, so the fallback applies
    # a grace period earlier
    lapses_at = deadline + MARGIN
    await warn(handlers, uow, expiring(payments, group.group_id, guest, lapses_at))
    moved = await load(uow, group.group_id)
    assert moved.deadline == deadline - GRACE
    clock.now = moved.deadline
    await expire_round(handlers, uow)
    covered = await load(uow, group.group_id)
    assert covered.status is GroupStatus.OPEN
    assert covered.fallback_at == deadline - GRACE
    assert covered.members[2].status is MemberStatus.COVERED_BY_HOST
    assert covered.due_reason == ""
    assert covered.grace_deadline == lapses_at - MARGIN  # the host pays by the safe moment


async def test_a_hold_lapsing_during_the_hosts_grace_brings_the_grace_deadline_forward(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(
        handlers,
        uow,
        clock,
        guests=2,
        total=900,
        deadline_in=3600,
        policy=FallbackPolicy.HOST_PAYS_REMAINING,
    )
    await pay(handlers, uow, payments, group, 1)
    clock.advance(3600)
    await expire_round(handlers, uow)
    covering = await load(uow, group.group_id)
    assert covering.grace_deadline == clock() + GRACE
    lapses_at = clock() + MARGIN + GRACE / 2
    await warn(
        handlers, uow, expiring(payments, group.group_id, group.members[1].member_id, lapses_at)
    )
    moved = await load(uow, group.group_id)
    assert moved.grace_deadline == lapses_at - MARGIN
    assert moved.deadline == covering.deadline


async def test_a_warning_for_a_pending_group_changes_nothing(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500, deadline_in=3600)
    await pay(handlers, uow, payments, group, 0)
    await pay(handlers, uow, payments, group, 1)
    pending = await load(uow, group.group_id)
    assert pending.status is GroupStatus.PENDING
    warning = expiring(payments, group.group_id, group.members[1].member_id, clock())
    await warn(handlers, uow, warning)
    assert (await load(uow, group.group_id)).version == pending.version


async def test_a_member_without_a_provider_is_shown_paying_with_the_default(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock
) -> None:
    cmd = create_cmd(clock, guests=2)
    cmd = replace(cmd, members=[replace(cmd.members[0], provider="paypal"), cmd.members[1]])
    group = await create(handlers, uow, cmd)
    assert handlers.default_provider == "sandbox"
    shown = group_to_proto(group, handlers.default_provider)
    assert [m.provider for m in shown.members] == [
        payment_pb2.PROVIDER_SANDBOX,
        payment_pb2.PROVIDER_PAYPAL,
        payment_pb2.PROVIDER_SANDBOX,
    ]
    # what is stored stays "the default" (a later change of the default applies to them)
    assert [m.provider for m in group.members] == ["", "paypal", ""]
    other = ProviderChoice(configured=("stripe", "paypal"), default="stripe")
    assert group_to_proto(group, other.default).members[0].provider == payment_pb2.PROVIDER_STRIPE


async def test_a_group_created_without_a_deadline_gets_the_default_within_the_holds(
    payments: FakePayments, orders: FakeOrders, uow: FakeUnitOfWork, clock: Clock
) -> None:
    def with_default(span: timedelta) -> GroupHandlers:
        return make_handlers(clock, payments, orders, default_deadline=span)

    made = await create(
        with_default(timedelta(hours=24)), uow, replace(create_cmd(clock), deadline=None)
    )
    assert made.deadline == made.created_at + timedelta(hours=24)
    # the default is held to the same hold windows as a deadline the host names
    with pytest.raises(InvalidArgumentError) as refused:
        await create(
            with_default(timedelta(days=8)), uow, replace(create_cmd(clock), deadline=None)
        )
    assert [v.field for v in refused.value.violations] == ["deadline"]


def test_the_deadline_is_optional_and_must_lie_ahead_when_given() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    request = group_service_pb2.CreateGroupRequest(
        merchant_id="m",
        currency_code="USD",
        items=[cart_pb2.LineItem(line_id="l1", sku="s", name="n", quantity=1, unit_price_minor=5)],
        split_mode=group_pb2.SPLIT_MODE_EQUAL,
        fallback_policy=group_pb2.FALLBACK_POLICY_CANCEL,
        host=group_pb2.MemberInput(display_name="Hana"),
    )
    assert parsing.create_group(request, HOST, now).deadline is None
    request.deadline.FromDatetime(now + timedelta(hours=2))
    assert parsing.create_group(request, HOST, now).deadline == now + timedelta(hours=2)
    request.deadline.FromDatetime(now - timedelta(seconds=1))
    with pytest.raises(InvalidArgumentError) as refused:
        parsing.create_group(request, HOST, now)
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("deadline", "must be in the future")
    ]
