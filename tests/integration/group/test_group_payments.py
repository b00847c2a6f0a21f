"""A group of four pays and is finalized exactly once, with two group service replicas
handling the payments concurrently; then the order confirms it. Also: a declined member
retries with a fresh attempt, and a payment nobody needs any more is released."""

from __future__ import annotations

import asyncio
import functools

import grpc
import pytest

from mppo.group.v1 import group_pb2
from mppo.group.v1 import group_service_pb2 as gs
from tests.integration.group.fake_payment import FakePaymentService
from tests.integration.group.harness import (
    Stack,
    create_request,
    eventually,
    get_group,
    of_type,
    open_group,
    user_md,
    wait_status,
)

OPEN = group_pb2.GROUP_STATUS_OPEN
PENDING = group_pb2.GROUP_STATUS_PENDING


async def test_four_members_pay_concurrently_on_two_replicas_and_the_group_finalizes_once(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    groups = [await open_group(stack) for _ in range(3)]
    for group in groups:
        assert group.status == OPEN
        assert [m.share.amount_minor for m in group.members] == [251, 250, 250, 250]
        assert all(m.payment_link.startswith("http://127.0.0.1:8090/") for m in group.members)
    payments = [fake.intent_for(g.group_id, m.member_id, 1) for g in groups for m in g.members]
    # twelve payment.succeeded at once, plus a redelivered-looking duplicate of each group's first
    await asyncio.gather(*(stack.pay(p) for p in payments))
    await asyncio.gather(*(stack.pay(payments[i]) for i in (0, 4, 8)))
    for i, group in enumerate(groups):
        final = await eventually(
            functools.partial(get_group, stack, group, i % 2),
            lambda g: g.status == PENDING,
        )
        assert final.amount_secured.amount_minor == 1001
        assert {m.status for m in final.members} == {group_pb2.MEMBER_STATUS_PAID}
    for group in groups:
        events = await stack.events(group.group_id)
        assert len(of_type(events, "group.opened")) == 1
        assert len(of_type(events, "member.paid")) == 4
        assert len(of_type(events, "group.fully_paid")) == 1
        (finalized,) = of_type(events, "group.finalized")
        assert finalized.merchant_id == "merchant-1"
        assert finalized.total.amount_minor == 1001
        assert sorted(s.amount.amount_minor for s in finalized.shares) == [250, 250, 250, 251]
        assert {s.payment_id for s in finalized.shares} == {m.payment_id for m in group.members}

    # the order service confirms the first group
    await stack.order_confirmed(groups[0].group_id, groups[0].total)
    confirmed = await wait_status(stack, groups[0], group_pb2.GROUP_STATUS_CONFIRMED)
    assert confirmed.order_id == "o-" + groups[0].group_id
    events = await stack.events(groups[0].group_id)
    assert len(of_type(events, "group.confirmed")) == 1


async def test_a_declined_member_retries_and_the_stale_attempt_is_voided(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    group = await open_group(stack, create_request(total=300, guests=2))
    host, guest, other = group.members
    first = fake.intent_for(group.group_id, guest.member_id, 1)
    await stack.decline(first)
    failed = await eventually(
        lambda: get_group(stack, group),
        lambda g: g.members[1].status == group_pb2.MEMBER_STATUS_PAYMENT_FAILED,
    )
    assert failed.status == OPEN
    # another member may not retry for them; they (or the host) may
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.stub().RetryPayment(
            gs.RetryPaymentRequest(group_id=group.group_id, member_id=guest.member_id),
            metadata=user_md(other.user_id),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    retried = await stack.stub().RetryPayment(
        gs.RetryPaymentRequest(group_id=group.group_id, member_id=guest.member_id),
        metadata=user_md(guest.user_id, key="retry-1"),
    )
    member = retried.group.members[1]
    assert (member.attempt, member.status) == (2, group_pb2.MEMBER_STATUS_AWAITING_PAYMENT)
    assert member.payment_id != first.payment_id
    assert member.payment_link
    second = fake.intent_for(group.group_id, guest.member_id, 2)
    assert second.payment_id == member.payment_id
    # the new attempt pays; the declined one "succeeding" late is not kept
    for p in (
        second,
        fake.intent_for(group.group_id, host.member_id, 1),
        fake.intent_for(group.group_id, other.member_id, 1),
    ):
        await stack.pay(p)
    await wait_status(stack, group, PENDING)
    await stack.pay(first)
    await eventually(lambda: _released(fake), lambda ids: first.payment_id in ids)
    (finalized,) = of_type(await stack.events(group.group_id), "group.finalized")
    assert first.payment_id not in {s.payment_id for s in finalized.shares}
    assert sum(s.amount.amount_minor for s in finalized.shares) == 300


async def test_cancel_answers_unavailable_until_the_links_can_be_closed(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    group = await open_group(stack, create_request(total=900, guests=2))
    cancel = gs.CancelGroupRequest(group_id=group.group_id, reason="plans changed")
    host = user_md(group.host_user_id, key="cancel-1")
    fake.close_unavailable = True
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.stub().CancelGroup(cancel, metadata=host)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (await get_group(stack, group)).status == OPEN
    finally:
        fake.close_unavailable = False
    cancelled = await stack.stub().CancelGroup(cancel, metadata=host)
    assert cancelled.group.status == group_pb2.GROUP_STATUS_CANCELLED
    assert {m.payment_id for m in group.members} <= set(fake.closed)
    (event,) = of_type(await stack.events(group.group_id), "group.cancelled")
    assert event.reason == "plans changed"
    again = await stack.stub().CancelGroup(cancel, metadata=host)  # the same key: replayed
    assert again.group.status == group_pb2.GROUP_STATUS_CANCELLED


async def test_a_retry_closes_the_link_it_replaces(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    group = await open_group(stack, create_request(total=500, guests=1))
    guest = group.members[1]
    first = fake.intent_for(group.group_id, guest.member_id, 1)
    await stack.decline(first)
    await eventually(
        lambda: get_group(stack, group),
        lambda g: g.members[1].status == group_pb2.MEMBER_STATUS_PAYMENT_FAILED,
    )
    await stack.stub().RetryPayment(
        gs.RetryPaymentRequest(group_id=group.group_id, member_id=guest.member_id),
        metadata=user_md(guest.user_id),
    )
    assert first.payment_id in fake.closed


async def _released(fake: FakePaymentService) -> list[str]:
    return list(fake.released)
