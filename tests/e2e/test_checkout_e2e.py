"""Group checkouts through the REST gateway with the whole system running as ``mppo dev up``
runs it, each outcome read back from every side: the group and its history, the payments,
the sandbox provider's ledger, the order, the merchant, and the notifications and e-mails.

- a group of four whose total does not divide by four: everyone pays on their hosted link,
  the group and the order are CONFIRMED, every share is captured;
- a member declined by the test card pays again on a fresh link (RetryPayment);
- a webhook storm (every event held, then delivered in reverse, each several times) ends in
  the same single outcome, with one state change and one event per payment.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from typing import Any

from tests.support.e2e import (
    CARD_DECLINE,
    GARLIC,
    PEPPERONI,
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

CONFIRMED_HISTORY = [
    ("UNSPECIFIED", "DRAFT"),
    ("DRAFT", "OPEN"),
    ("OPEN", "PENDING"),
    ("PENDING", "CONFIRMED"),
]


def four(api: Api) -> GroupOrder:
    return GroupOrder(api, Person.new("Hana"), [Person.new(n) for n in ("Ali", "Bo", "Cy")])


async def sent_notifications(order: GroupOrder, expected: Counter[str]) -> list[Json]:
    """The group's notifications once every expected (kind → count) one is SENT."""

    def done(found: list[Json]) -> bool:
        sent = Counter(
            n["kind"].removeprefix("NOTIFICATION_KIND_")
            for n in found
            if n["status"] == "NOTIFICATION_STATUS_SENT"
        )
        return all(sent[kind] >= count for kind, count in expected.items())

    return await eventually(order.notifications, done, within=40, what=f"notifications {expected}")


def kinds_per_member(notifications: list[Json]) -> Counter[tuple[str, str]]:
    return Counter(
        (n["memberId"], n["kind"].removeprefix("NOTIFICATION_KIND_")) for n in notifications
    )


async def assert_confirmed_everywhere(order: GroupOrder, total: int) -> Json:
    """The group CONFIRMED, its order CONFIRMED with every share captured, the ledger keeping
    exactly the total; returns the order."""
    api, host = order.api, order.host
    group = await order.wait("CONFIRMED")
    assert minor(group["amountSecured"]) == total
    confirmed = await api.wait_order(order.group_id, host.user, "CONFIRMED")
    assert confirmed["orderId"] == group["orderId"]
    assert minor(confirmed["total"]) == total
    assert {s["status"] for s in confirmed["shares"]} == {"ORDER_SHARE_STATUS_CAPTURED"}
    assert sum(minor(s["amount"]) for s in confirmed["shares"]) == total
    ledger = await eventually(
        order.ledger, lambda lg: lg["kept"] == total, within=20, what="ledger keeps the total"
    )
    assert ledger["held"] == 0, ledger
    assert ledger["totals"]["capture"] == total, ledger
    assert ledger["totals"]["refund"] == 0, ledger
    merchant = await api.merchant_state()
    placed = [o for o in merchant["orders"] if o["reference"] == confirmed["orderId"]]
    assert len(placed) == 1, placed
    assert placed[0]["merchant_order_id"] == confirmed["merchantOrderId"]
    return confirmed


async def test_group_of_four_pays_and_the_order_is_confirmed(api: Api) -> None:
    order = four(api)
    # 2 × 12.00 + 5.50 + 1.01 tax = 30.51 USD; 3051 cents = 4 × 762 + 3
    draft = await order.create(
        create_body(order.host, cart((PIZZA, 2), (GARLIC, 1)), tax_minor=101)
    )
    total = minor(draft["total"])
    assert draft["status"] == "GROUP_STATUS_DRAFT"
    assert total == 3051
    assert total % 4 == 3
    shares = [minor(m["share"]) for m in draft["members"]]
    assert sorted(shares) == [762, 763, 763, 763]
    assert sum(shares) == total
    assert {m["status"] for m in draft["members"]} == {"MEMBER_STATUS_JOINED"}

    opened = await order.open()
    assert opened["status"] == "GROUP_STATUS_OPEN"
    assert all(
        m["paymentLink"] and m["status"] == "MEMBER_STATUS_AWAITING_PAYMENT"
        for m in opened["members"]
    )
    # a member sees their own link only
    ali_view = await order.get(order.guests[0].user)
    own = order.member(ali_view, order.guests[0])
    assert own["paymentLink"]
    assert [m["paymentLink"] for m in ali_view["members"] if m is not own] == ["", "", ""]

    invitations = await sent_notifications(order, Counter({"INVITATION": 4}))
    assert {n["memberId"] for n in invitations} == set(order.member_ids.values())
    outcomes = await order.pay(order.people)
    assert [o["outcome"] for o in outcomes] == ["requires_capture"] * 4

    confirmed = await assert_confirmed_everywhere(order, total)
    group = await order.get()
    assert {m["status"] for m in group["members"]} == {"MEMBER_STATUS_PAID"}
    assert await order.statuses() == CONFIRMED_HISTORY

    payments = await order.payments()
    assert len(payments) == 4
    assert {p["status"] for p in payments} == {"PAYMENT_STATUS_CAPTURED"}
    assert {p["memberId"] for p in payments} == set(order.member_ids.values())
    assert sum(minor(p["amountCaptured"]) for p in payments) == total
    assert {p["paymentId"] for p in payments} == {s["paymentId"] for s in confirmed["shares"]}

    notes = await sent_notifications(
        order, Counter({"INVITATION": 4, "PAYMENT_RECEIVED": 4, "GROUP_CONFIRMED": 4})
    )
    per_member = kinds_per_member(notes)
    for member_id in order.member_ids.values():
        for kind in ("INVITATION", "PAYMENT_RECEIVED", "GROUP_CONFIRMED"):
            assert per_member[(member_id, kind)] == 1, (member_id, kind, per_member)
    for person in order.people:
        share = minor(order.member(group, person)["share"])
        money = f"{share // 100}.{share % 100:02d} USD"  # as e-mails and the page write it
        mails = await eventually(
            functools.partial(order.mails_to, person),
            lambda found: len(found) >= 3,
            what=f"{person.name}'s e-mails",
        )
        by_subject = {m["subject"]: m for m in mails}
        assert sorted(m["subject"] for m in mails) == [
            "Payment received: " + money,
            "You're invited to pay your share: " + money,
            "Your group order is confirmed",
        ], mails
        link = order.member(group, person)["paymentLink"]
        assert link in by_subject["You're invited to pay your share: " + money]["body"]
        assert confirmed["orderId"] in by_subject["Your group order is confirmed"]["body"]


async def test_a_declined_member_pays_again_on_a_fresh_link(api: Api) -> None:
    order = four(api)
    draft = await order.create(create_body(order.host, cart((PEPPERONI, 2), (SODA, 3))))
    total = minor(draft["total"])
    await order.open()
    cy = order.guests[2]
    first_link = await order.link_of(cy)
    declined = await api.pay(first_link, CARD_DECLINE)
    assert declined["outcome"] == "declined", declined
    failed = await order.wait_member(cy, "PAYMENT_FAILED")
    assert failed["attempt"] == 1
    group = await order.get()
    assert group["status"] == "GROUP_STATUS_OPEN"

    retried = await api.call(
        "POST",
        f"/group/{order.group_id}/members/{order.member_ids[cy.user]}/retry-payment",
        cy.user,
        {},
    )
    mine = order.member(retried.ok()["group"], cy)
    assert mine["attempt"] == 2
    assert mine["paymentLink"]
    assert mine["paymentLink"] != first_link
    assert mine["status"] == "MEMBER_STATUS_AWAITING_PAYMENT"
    outcomes = await order.pay(order.people)
    assert [o["outcome"] for o in outcomes] == ["requires_capture"] * 4

    await assert_confirmed_everywhere(order, total)
    assert await order.statuses() == CONFIRMED_HISTORY
    payments = await order.payments()
    cy_payments = [p for p in payments if p["memberId"] == order.member_ids[cy.user]]
    assert sorted((p["attempt"], p["status"]) for p in cy_payments) == [
        (1, "PAYMENT_STATUS_FAILED"),
        (2, "PAYMENT_STATUS_CAPTURED"),
    ]
    assert sum(minor(p["amountCaptured"]) for p in payments) == total
    ledger = await order.ledger()
    assert ledger["totals"]["hold"] == total, ledger  # the declined card never held money


async def _webhook_deliveries(api: Api, intents: list[str]) -> list[Json]:
    events: list[Json] = []
    for intent in intents:
        events += await api.sandbox_events(payment_intent=intent)
    return events


async def test_a_duplicated_and_reordered_webhook_storm_has_one_outcome(api: Api) -> None:
    order = four(api)
    draft = await order.create(create_body(order.host, cart((TIRAMISU, 3), (SODA, 1)), tip_minor=3))
    total = minor(draft["total"])
    opened = await order.open()
    payment_ids = [m["paymentId"] for m in opened["members"]]

    await api.sandbox_faults(hold=True, duplicate=3)
    outcomes = [await api.pay(await order.link_of(p)) for p in order.people]
    intents = [o["payment_intent"] for o in outcomes]
    held = await _webhook_deliveries(api, intents)
    assert held
    assert {e["delivery"].get("status") for e in held} == {"held"}, held
    group = await order.get()
    assert {m["status"] for m in group["members"]} == {"MEMBER_STATUS_AWAITING_PAYMENT"}

    # the held events in reverse order, and every one of them three more times at once
    resends = [
        api.request("POST", f"{api.stack.sandbox}/_sandbox/events/{e['id']}/resend")
        for e in held
        for _ in range(3)
    ]
    released, resent = await asyncio.gather(
        api.sandbox_release("reverse"), asyncio.gather(*resends)
    )
    assert released == len(held)
    assert [r.status for r in resent] == [200] * 3 * len(held)

    await assert_confirmed_everywhere(order, total)
    assert await order.statuses() == CONFIRMED_HISTORY
    # later events (captures) went out four times each: the duplicate fault is still on
    captured = [e for e in await _webhook_deliveries(api, intents) if "captur" in e["type"]]
    assert captured, "no capture webhooks"

    # one state change per payment, one event per change
    history = await api.stack.query(
        "payment",
        "SELECT payment_id, to_status, count(*) AS n FROM payment_status_history"
        " WHERE payment_id = ANY($1) GROUP BY payment_id, to_status",
        payment_ids,
    )
    per_status: dict[tuple[str, str], int] = {
        (r["payment_id"], r["to_status"]): r["n"] for r in history
    }
    assert all(n == 1 for n in per_status.values()), per_status
    for pid in payment_ids:
        assert per_status.get((pid, "authorized")) == 1, per_status
        assert per_status.get((pid, "captured")) == 1, per_status
    outbox = await api.stack.query(
        "payment",
        "SELECT aggregate_id, event_type, count(*) AS n FROM outbox"
        " WHERE aggregate_id = ANY($1) GROUP BY aggregate_id, event_type",
        payment_ids,
    )
    counts: dict[tuple[str, str], int] = {
        (r["aggregate_id"], r["event_type"]): r["n"] for r in outbox
    }
    for pid in payment_ids:
        assert counts.get((pid, "payment.succeeded")) == 1, counts
        assert counts.get((pid, "payment.captured")) == 1, counts
    group_events = await api.stack.query(
        "group",
        "SELECT event_type, count(*) AS n FROM outbox WHERE aggregate_id = $1 GROUP BY event_type",
        order.group_id,
    )
    by_type: dict[str, Any] = {r["event_type"]: r["n"] for r in group_events}
    assert by_type.get("member.paid") == 4, by_type
    assert by_type.get("group.fully_paid") == 1, by_type
    assert by_type.get("group.finalized") == 1, by_type
    stored = await api.stack.query(
        "payment",
        "SELECT count(*) AS n FROM webhook_events WHERE provider_payment_id = ANY($1)",
        intents,
    )
    assert stored[0]["n"] == len({e["id"] for e in await _webhook_deliveries(api, intents)})
    notes = await sent_notifications(order, Counter({"PAYMENT_RECEIVED": 4, "GROUP_CONFIRMED": 4}))
    assert Counter(n["kind"] for n in notes)["NOTIFICATION_KIND_PAYMENT_RECEIVED"] == 4
