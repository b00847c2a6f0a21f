"""Holds that never lapse and a provider per member (issue 14, parts 1 and 2), against the
in-memory fakes: deadlines beyond the shortest hold window of the providers in play are
refused, providers are checked against those configured, a member's provider reaches the
payment service (and a join naming another one replaces the unpaid link), and a hold about to
lapse makes the group act at once, its history saying why."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import FallbackPolicy, MemberStatus
from group_svc.service_layer import commands as c
from group_svc.service_layer.handlers import GroupHandlers
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.errors import InvalidArgumentError
from mppo.platform.providers import ProviderChoice
from tests.unit.group.fakes import Clock, FakeOrders, FakePayments, FakeUnitOfWork
from tests.unit.group.test_group_handlers import (
    GUEST,
    clock,
    create,
    create_cmd,
    expire_round,
    load,
    opened,
    orders,
    pay,
    payments,
    uow,
)

__all__ = ["clock", "orders", "payments", "uow"]  # the fixtures, shared

DAY = 86400.0


@pytest.fixture
def handlers(clock: Clock, payments: FakePayments, orders: FakeOrders) -> GroupHandlers:
    return GroupHandlers(
        payments=payments,
        orders=orders,
        host_grace=timedelta(seconds=60),
        reminder_lead=timedelta(seconds=30),
        clock=clock,
        providers=ProviderChoice(configured=("sandbox", "paypal", "razorpay"), default="sandbox"),
    )


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


def expiring(payments: FakePayments, group_id: str, member_id: str) -> object:
    intent = payments.intents[(group_id, member_id, 1)]
    lapses = Timestamp()
    lapses.FromSeconds(1_900_000_000)
    return payment_events_pb2.AuthorizationExpiring(
        payment_id=intent.payment_id, group_id=group_id, authorization_expire_time=lapses
    )


async def test_a_lapsing_hold_applies_the_fallback_now_and_the_history_says_why(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=900, deadline_in=3600)
    await pay(handlers, uow, payments, group, 1)
    warning = expiring(payments, group.group_id, group.members[1].member_id)
    async with uow:
        await handlers.authorization_expiring(warning, uow)  # type: ignore[arg-type]
        await uow.commit()
    assert await expire_round(handlers, uow) == []  # due now, not in an hour
    expired = await load(uow, group.group_id)
    assert expired.status is GroupStatus.EXPIRED
    assert "lapses at" in expired.close_reason
    assert "Guest 1" in expired.close_reason
    async with uow:
        history = await uow.groups.history(group.group_id)
    reasons = [h["reason"] for h in history]
    assert any("the fallback applies now" in r for r in reasons)
    assert reasons[-1] == expired.close_reason
    # the warning again (redelivered) changes nothing
    async with uow:
        await handlers.authorization_expiring(warning, uow)  # type: ignore[arg-type]
        await uow.commit()
    assert (await load(uow, group.group_id)).version == expired.version


async def test_a_lapsing_hold_moves_the_rest_to_the_host_under_host_pays_remaining(
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
    warning = expiring(payments, group.group_id, group.members[1].member_id)
    async with uow:
        await handlers.authorization_expiring(warning, uow)  # type: ignore[arg-type]
        await uow.commit()
    await expire_round(handlers, uow)
    covered = await load(uow, group.group_id)
    assert covered.status is GroupStatus.OPEN
    assert covered.fallback_at is not None
    assert covered.members[2].status is MemberStatus.COVERED_BY_HOST
    assert covered.due_reason == ""
    assert covered.grace_deadline is not None
    assert covered.grace_deadline <= clock().astimezone(UTC) + timedelta(seconds=60)


async def test_a_warning_for_a_pending_group_changes_nothing(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=500, deadline_in=3600)
    await pay(handlers, uow, payments, group, 0)
    await pay(handlers, uow, payments, group, 1)
    pending = await load(uow, group.group_id)
    assert pending.status is GroupStatus.PENDING
    warning = expiring(payments, group.group_id, group.members[1].member_id)
    async with uow:
        await handlers.authorization_expiring(warning, uow)  # type: ignore[arg-type]
        await uow.commit()
    assert (await load(uow, group.group_id)).version == pending.version
