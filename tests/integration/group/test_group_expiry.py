"""Deadlines with three schedulers running at once (two service replicas and the standalone
`python -m group_svc.standalone_scheduler`): one expiry per group, CANCEL releasing the holds,
HOST_PAYS_REMAINING moving the remainder to the host, and payments racing the deadline."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from datetime import UTC, datetime

import asyncpg

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

EXPIRED = group_pb2.GROUP_STATUS_EXPIRED
PENDING = group_pb2.GROUP_STATUS_PENDING
HOST_PAYS = group_pb2.FALLBACK_POLICY_HOST_PAYS_REMAINING


async def history(stack: Stack, group: group_pb2.GroupOrder) -> list[tuple[int, int]]:
    """The group's transitions, read whole and page by page (the same, or the test fails)."""
    md = user_md(group.host_user_id)
    reply = await stack.stub().GetGroupHistory(
        gs.GetGroupHistoryRequest(group_id=group.group_id), metadata=md
    )
    whole: list[tuple[int, int]] = [(c.from_status, c.to_status) for c in reply.changes]
    paged: list[tuple[int, int]] = []
    token = ""
    for _ in range(len(whole) + 1):
        page = await stack.stub().GetGroupHistory(
            gs.GetGroupHistoryRequest(group_id=group.group_id, page_size=1, page_token=token),
            metadata=md,
        )
        assert len(page.changes) <= 1
        paged += [(c.from_status, c.to_status) for c in page.changes]
        token = page.next_page_token
        if not token:
            break
    assert paged == whole
    return whole


async def test_cancel_policy_expires_once_and_lists_every_hold(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    group = await open_group(stack, create_request(total=1001, guests=3, deadline_in=2.5))
    paid = fake.intent_for(group.group_id, group.members[1].member_id, 1)
    await stack.pay(paid)
    await eventually(
        lambda: get_group(stack, group),
        lambda g: g.members[1].status == group_pb2.MEMBER_STATUS_PAID,
    )
    expired = await wait_status(stack, group, EXPIRED, within=15)
    assert expired.close_reason == "deadline passed"
    events = await stack.events(group.group_id)
    (event,) = of_type(events, "group.expired")  # exactly one, with three schedulers
    assert paid.payment_id in event.payment_ids
    assert set(event.payment_ids) == {m.payment_id for m in group.members}
    assert not of_type(events, "group.finalized")
    assert await history(stack, group) == [
        (group_pb2.GROUP_STATUS_UNSPECIFIED, group_pb2.GROUP_STATUS_DRAFT),
        (group_pb2.GROUP_STATUS_DRAFT, group_pb2.GROUP_STATUS_OPEN),
        (group_pb2.GROUP_STATUS_OPEN, EXPIRED),
    ]
    # reminders went out at most once per member, and to everyone unpaid at the deadline
    reminded = Counter(e.member_id for e in of_type(events, "group.reminder_due"))
    assert all(n == 1 for n in reminded.values())
    assert {m.member_id for m in group.members[2:]} | {group.members[0].member_id} <= set(reminded)
    # a payment arriving after the expiry is not kept: it is voided
    late = fake.intent_for(group.group_id, group.members[2].member_id, 1)
    await stack.pay(late)
    await eventually(lambda: _released(fake), lambda ids: late.payment_id in ids)
    assert (await get_group(stack, group)).status == EXPIRED


async def test_host_pays_remaining_moves_the_remainder_to_the_host(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    request = create_request(total=1001, guests=3, deadline_in=2.5, policy=HOST_PAYS)
    rescued, lapsed = await asyncio.gather(open_group(stack, request), open_group(stack, request))
    for group in (rescued, lapsed):
        for member in group.members[1:3]:  # two guests pay, the host and one guest don't
            await stack.pay(fake.intent_for(group.group_id, member.member_id, 1))
    # the fallback commits first, the host's new intent one payment-service call later
    covered = await eventually(
        lambda: get_group(stack, rescued),
        lambda g: g.grace_deadline.seconds > 0 and bool(g.members[0].payment_id),
        within=15,
    )
    host, _, _, guest3 = covered.members
    assert covered.status == group_pb2.GROUP_STATUS_OPEN
    assert guest3.status == group_pb2.MEMBER_STATUS_COVERED_BY_HOST
    assert guest3.share.amount_minor == 0
    assert host.share.amount_minor == 251 + 250
    assert sum(m.share.amount_minor for m in covered.members) == 1001
    assert host.attempt == 2
    new_intent = fake.intent_for(rescued.group_id, host.member_id, 2)
    assert new_intent.amount.amount_minor == 501
    await eventually(
        lambda: stack.events(rescued.group_id),
        lambda evs: len(of_type(evs, "group.host_fallback")) == 1,
    )
    (fallback,) = of_type(await stack.events(rescued.group_id), "group.host_fallback")
    assert (fallback.amount.amount_minor, fallback.payment_id) == (501, new_intent.payment_id)
    assert fallback.payment_link == new_intent.payment_link
    # the host pays within the grace period: the group completes with the host's new share
    await stack.pay(new_intent)
    await wait_status(stack, rescued, PENDING)
    (finalized,) = of_type(await stack.events(rescued.group_id), "group.finalized")
    assert sum(s.amount.amount_minor for s in finalized.shares) == 1001
    assert new_intent.payment_id in {s.payment_id for s in finalized.shares}
    # the other host lets the grace period pass: EXPIRED, once
    await wait_status(stack, lapsed, EXPIRED, within=20)
    events = await stack.events(lapsed.group_id)
    assert len(of_type(events, "group.host_fallback")) == 1
    (expired,) = of_type(events, "group.expired")
    assert expired.reason == "grace period passed"


async def test_a_payment_racing_the_deadline_ends_in_one_outcome(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    offsets = [-0.4, -0.15, -0.05, 0.0, 0.05, 0.15, 0.4]
    groups = await asyncio.gather(
        *(open_group(stack, create_request(total=500, guests=1, deadline_in=3.0)) for _ in offsets)
    )
    for group in groups:
        await stack.pay(fake.intent_for(group.group_id, group.members[0].member_id, 1))

    async def last_payment(group: group_pb2.GroupOrder, offset: float) -> None:
        deadline = group.deadline.ToDatetime(tzinfo=UTC)
        delay = (deadline - datetime.now(UTC)).total_seconds() + offset
        await asyncio.sleep(max(delay, 0))
        await stack.pay(fake.intent_for(group.group_id, group.members[1].member_id, 1))

    await asyncio.gather(*(last_payment(g, o) for g, o in zip(groups, offsets, strict=True)))
    outcomes = []
    for group in groups:
        final = await eventually(
            functools.partial(get_group, stack, group), lambda g: g.status in (PENDING, EXPIRED)
        )
        events = await stack.events(group.group_id)
        finalized = of_type(events, "group.finalized")
        expired = of_type(events, "group.expired")
        assert len(finalized) + len(expired) == 1, events
        last = fake.intent_for(group.group_id, group.members[1].member_id, 1)
        if final.status == PENDING:
            assert len(finalized) == 1
            assert final.amount_secured.amount_minor == 500
        else:
            # expired first: the racing payment is released, never kept
            await eventually(lambda: _released(fake), functools.partial(_contains, last.payment_id))
        outcomes.append(final.status)
    # the database agrees: one terminal transition per group
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT group_id, count(*) AS n FROM group_status_history"
            " WHERE to_status IN ('PENDING', 'EXPIRED') AND group_id = ANY($1) GROUP BY group_id",
            [g.group_id for g in groups],
        )
    finally:
        await conn.close()
    assert sorted(r["n"] for r in rows) == [1] * len(groups)


def _contains(payment_id: str, ids: list[str]) -> bool:
    return payment_id in ids


async def _released(fake: FakePaymentService) -> list[str]:
    return list(fake.released)


async def test_the_deadline_waits_while_the_payment_service_cannot_close_the_links(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    group = await open_group(stack, create_request(total=900, guests=2, deadline_in=2.0))
    links = {m.payment_id for m in group.members}
    fake.close_unavailable = True
    try:
        # past the deadline, with schedulers running every 0.3 s: still OPEN, nothing announced
        await asyncio.sleep(4.0)
        assert (await get_group(stack, group)).status == group_pb2.GROUP_STATUS_OPEN
        assert not of_type(await stack.events(group.group_id), "group.expired")
    finally:
        fake.close_unavailable = False
    expired = await wait_status(stack, group, EXPIRED, within=15)
    assert expired.close_reason == "deadline passed"
    assert links <= set(fake.closed)
    (event,) = of_type(await stack.events(group.group_id), "group.expired")
    assert set(event.payment_ids) == links
