"""Group orders that do not simply complete, through the REST gateway with the whole system
running as ``mppo dev up`` runs it, each outcome read back from every side:

- the deadline passes with CANCEL: the group EXPIRED, the holds voided (the ledger holds and
  keeps nothing, even for a payment made after the expiry), the expiry e-mails say the hold
  was released or that nothing was charged;
- the deadline passes with HOST_PAYS_REMAINING: the unpaid shares move to the host, who pays
  them on a new link, and the order is confirmed with the whole total kept;
- the merchant is out of stock: order.failed, the group CANCELLED, no money kept.
"""

from __future__ import annotations

from collections import Counter

from tests.support.e2e import (
    GARLIC,
    PIZZA,
    SODA,
    TIRAMISU,
    Api,
    GroupOrder,
    Json,
    Person,
    cart,
    create_body,
    eventually,
    minor,
)

#: seconds from creating a group to its deadline in the expiry tests: enough to create, open
#: and pay on a busy two-core machine, short enough to keep the tier fast
SHORT_DEADLINE = 10.0


def usd(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d} USD"  # as e-mails write it


def four(api: Api) -> GroupOrder:
    return GroupOrder(api, Person.new("Hana"), [Person.new(n) for n in ("Ali", "Bo", "Cy")])


async def notified(order: GroupOrder, kind: str, count: int) -> list[Json]:
    """The group's SENT notifications of ``kind`` once there are ``count`` of them."""

    async def sent() -> list[Json]:
        return [
            n
            for n in await order.notifications()
            if n["kind"] == f"NOTIFICATION_KIND_{kind}"
            and n["status"] == "NOTIFICATION_STATUS_SENT"
        ]

    return await eventually(sent, lambda found: len(found) >= count, within=45, what=kind)


async def mail_to(order: GroupOrder, person: Person, subject: str) -> Json:
    """The one e-mail ``person`` got about the group with ``subject``."""

    async def matching() -> list[Json]:
        return [
            m
            for m in await order.mails()
            if person.email in m["rcpt_to"] and m["subject"] == subject
        ]

    found = await eventually(matching, bool, within=30, what=f"{subject!r} to {person.name}")
    assert len(found) == 1, found
    return found[0]


async def no_money_kept(order: GroupOrder, held_before: int) -> Json:
    """The ledger once every hold is released: nothing held, nothing kept."""
    ledger = await eventually(
        order.ledger,
        lambda lg: lg["held"] == 0 and lg["totals"]["hold"] >= held_before,
        within=30,
        what="every hold released",
    )
    assert ledger["kept"] == 0, ledger
    assert ledger["totals"]["capture"] == 0, ledger
    assert ledger["totals"]["release"] == ledger["totals"]["hold"], ledger
    return ledger


async def test_deadline_with_cancel_voids_the_holds(api: Api) -> None:
    order = four(api)
    draft = await order.create(
        create_body(
            order.host,
            cart((PIZZA, 1), (SODA, 2)),
            deadline_in=SHORT_DEADLINE,
            policy="CANCEL",
        )
    )
    total = minor(draft["total"])
    opened = await order.open()
    payers, others = order.people[:2], order.people[2:]
    outcomes = await order.pay(payers)
    assert [o["outcome"] for o in outcomes] == ["requires_capture"] * 2
    for person in payers:
        await order.wait_member(person, "PAID", within=SHORT_DEADLINE)
    paid_total = sum(minor(order.member(opened, p)["share"]) for p in payers)
    assert 0 < paid_total < total

    expired = await order.wait("EXPIRED", within=SHORT_DEADLINE + 30)
    assert expired["closeReason"], expired
    assert await order.statuses() == [
        ("UNSPECIFIED", "DRAFT"),
        ("DRAFT", "OPEN"),
        ("OPEN", "EXPIRED"),
    ]
    # a member who pays after the expiry (if the page still takes it) is never charged
    late = await api.pay(await order.link_of(others[0]))
    assert late.get("outcome") != "succeeded", late

    ledger = await no_money_kept(order, paid_total)
    assert ledger["totals"]["hold"] in (
        paid_total,
        paid_total + minor(order.member(opened, others[0])["share"]),
    )
    payments = await eventually(
        order.payments,
        lambda ps: (
            not {p["status"] for p in ps} & {"PAYMENT_STATUS_AUTHORIZED", "PAYMENT_STATUS_CAPTURED"}
        ),
        within=30,
        what="no payment authorized or captured",
    )
    by_member = {p["memberId"]: p for p in payments}
    for person in payers:
        assert by_member[order.member_ids[person.user]]["status"] == "PAYMENT_STATUS_VOIDED"
    assert sum(minor(p["amountCaptured"]) for p in payments) == 0
    assert (await api.order_of(order.group_id, order.host.user)).status == 404

    notes = await notified(order, "GROUP_EXPIRED", 4)
    assert Counter(n["memberId"] for n in notes) == Counter(order.member_ids.values())
    for person in payers:
        share = minor(order.member(opened, person)["share"])
        mail = await mail_to(order, person, "Your group order expired")
        assert f"The hold on your payment of {usd(share)} has been released." in mail["body"]
    mail = await mail_to(order, others[1], "Your group order expired")
    assert "You were not charged." in mail["body"]


async def test_deadline_with_host_pays_remaining_confirms_the_order(api: Api) -> None:
    order = four(api)
    draft = await order.create(
        create_body(
            order.host,
            cart((TIRAMISU, 2), (GARLIC, 1)),
            deadline_in=SHORT_DEADLINE,
            policy="HOST_PAYS_REMAINING",
            fees_minor=99,
        )
    )
    total = minor(draft["total"])
    opened = await order.open()
    host, ali, bo, cy = order.people
    await order.pay([host, ali])
    for person in (host, ali):
        await order.wait_member(person, "PAID", within=SHORT_DEADLINE)
    first_link = order.member(opened, host)["paymentLink"]
    uncovered = sum(minor(order.member(opened, p)["share"]) for p in (bo, cy))

    # after the deadline: Bo's and Cy's shares move to the host, who has a new link
    moved = await eventually(
        order.get,
        lambda g: (
            order.member(g, host)["status"] == "MEMBER_STATUS_AWAITING_PAYMENT"
            and order.member(g, host)["attempt"] == 2
            and bool(order.member(g, host)["paymentLink"])  # the new intent is asked for after
        ),
        within=SHORT_DEADLINE + 30,
        what="the remainder moved to the host",
    )
    assert moved["status"] == "GROUP_STATUS_OPEN"
    assert moved["graceDeadline"]
    host_now = order.member(moved, host)
    assert minor(host_now["share"]) == minor(order.member(opened, host)["share"]) + uncovered
    assert host_now["attempt"] == 2
    assert host_now["paymentLink"] not in ("", first_link)
    for person in (bo, cy):
        assert order.member(moved, person)["status"] == "MEMBER_STATUS_COVERED_BY_HOST"
    fallback = await mail_to(
        order, host, f"Please pay the remaining {usd(uncovered)} of your group order"
    )
    assert host_now["paymentLink"] in fallback["body"]

    outcome = await api.pay(host_now["paymentLink"])
    assert outcome["outcome"] == "requires_capture", outcome
    group = await order.wait("CONFIRMED")
    assert minor(group["amountSecured"]) == total
    assert await order.statuses() == [
        ("UNSPECIFIED", "DRAFT"),
        ("DRAFT", "OPEN"),
        ("OPEN", "OPEN"),  # the deadline passed: the host covers the rest
        ("OPEN", "PENDING"),
        ("PENDING", "CONFIRMED"),
    ]
    covers = (await api.history(order.group_id, host.user))[2]
    assert covers["reason"].startswith("deadline passed: the host covers the rest ("), covers
    confirmed = await api.wait_order(order.group_id, host.user, "CONFIRMED")
    assert minor(confirmed["total"]) == total
    assert sum(minor(s["amount"]) for s in confirmed["shares"]) == total
    ledger = await eventually(
        order.ledger, lambda lg: lg["kept"] == total, within=20, what="ledger keeps the total"
    )
    assert ledger["held"] == 0, ledger
    payments = await order.payments()
    captured = [p for p in payments if p["status"] == "PAYMENT_STATUS_CAPTURED"]
    assert sum(minor(p["amountCaptured"]) for p in captured) == total
    host_payments = sorted(
        (p["attempt"], minor(p["amountCaptured"]))
        for p in captured
        if p["memberId"] == order.member_ids[host.user]
    )
    assert host_payments == [(1, minor(order.member(opened, host)["share"])), (2, uncovered)]
    await notified(order, "GROUP_CONFIRMED", 1)


async def test_out_of_stock_cancels_the_group_and_keeps_no_money(api: Api) -> None:
    order = four(api)
    draft = await order.create(create_body(order.host, cart((PIZZA, 3), (SODA, 1))))
    total = minor(draft["total"])
    await order.open()
    fault = await api.merchant_fault(action="reserve", fault="out_of_stock", times=1)
    assert fault["remaining"] == 1
    try:
        await order.pay(order.people)
        cancelled = await order.wait("CANCELLED")
    finally:
        state = await api.merchant_state()
        if state["faults"]:  # not used up: leave the merchant as the other tests expect it
            await api.request("POST", api.stack.merchant + "/_control/reset")
    assert state["faults"] == []
    assert cancelled["closeReason"], cancelled
    assert await order.statuses() == [
        ("UNSPECIFIED", "DRAFT"),
        ("DRAFT", "OPEN"),
        ("OPEN", "PENDING"),
        ("PENDING", "CANCELLED"),
    ]
    failed = await api.wait_order(order.group_id, order.host.user, "FAILED")
    assert failed["failureReason"] == "ORDER_FAILURE_REASON_OUT_OF_STOCK", failed
    assert not [o for o in state["orders"] if o["reference"] == failed["orderId"]]

    await no_money_kept(order, total)
    payments = await eventually(
        order.payments,
        lambda ps: {p["status"] for p in ps} == {"PAYMENT_STATUS_VOIDED"},
        within=30,
        what="every payment voided",
    )
    assert len(payments) == 4
    await notified(order, "GROUP_CANCELLED", 4)
    for person in order.people:
        share = minor(order.member(cancelled, person)["share"])
        mail = await mail_to(order, person, "Your group order was cancelled")
        assert f"The hold on your payment of {usd(share)} has been released." in mail["body"]
