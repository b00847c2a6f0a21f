"""The edge of the running system: a provider webhook posted through the REST gateway has its
Stripe-style signature verified by the payment service (a tampered, stale or wrongly signed
one gets a 4xx and changes nothing; the genuine one moves the payment and the group), and the
gateway plus the group service keep people out of groups that are not theirs."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from payment_svc.sandbox.config import DEV_WEBHOOK_SECRET
from tests.support.e2e import (
    PIZZA,
    Api,
    GroupOrder,
    Json,
    Person,
    Reply,
    cart,
    create_body,
    eventually,
)


def stripe_signature(body: bytes, secret: str = DEV_WEBHOOK_SECRET, at: int | None = None) -> str:
    moment = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


async def post_webhook(api: Api, body: bytes, signature: str) -> Reply:
    return await api.request(
        "POST",
        api.stack.gateway + "/payments/webhook/sandbox",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )


async def payment_status(order: GroupOrder, payment_id: str) -> str:
    reply = (await order.api.call("GET", f"/payments/{payment_id}", order.host.user)).ok()
    status: str = reply["payment"]["status"]
    return status


async def test_a_webhook_through_the_gateway_is_verified_by_the_payment_service(
    api: Api,
) -> None:
    guest = Person.new("Gus")
    order = GroupOrder(api, Person.new("Hana"), [guest])
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    opened = await order.open()
    payment_id = order.member(opened, guest)["paymentId"]

    await api.sandbox_faults(hold=True)
    outcome = await api.pay(await order.link_of(guest))
    assert outcome["outcome"] == "requires_capture", outcome
    (event,) = await api.sandbox_events(
        payment_intent=outcome["payment_intent"], type_="payment_intent.amount_capturable_updated"
    )
    assert event["delivery"]["status"] == "held"
    body = event["body"].encode()
    before = await payment_status(order, payment_id)
    assert before != "PAYMENT_STATUS_AUTHORIZED"

    tampered = json.loads(body)
    tampered["data"]["object"]["amount_capturable"] = 1
    bad = {
        "tampered body": (json.dumps(tampered).encode(), stripe_signature(body)),
        "wrong secret": (body, stripe_signature(body, secret="whsec_not_ours")),
        "stale timestamp": (body, stripe_signature(body, at=int(time.time()) - 3600)),
        "no signature": (body, ""),
        "garbage signature": (body, "t=1,v1=00"),
    }
    for what, (data, signature) in bad.items():
        reply = await post_webhook(api, data, signature)
        assert 400 <= reply.status < 500, (what, reply)
        assert reply.body["code"] in (3, 16), (what, reply.body)  # INVALID_ARGUMENT / UNAUTH.
    assert await payment_status(order, payment_id) == before
    stored = await api.stack.query(
        "payment", "SELECT count(*) AS n FROM webhook_events WHERE event_id = $1", event["id"]
    )
    assert stored[0]["n"] == 0
    group = await order.get()
    assert order.member(group, guest)["status"] == "MEMBER_STATUS_AWAITING_PAYMENT"

    genuine = await post_webhook(api, body, stripe_signature(body))
    assert genuine.status == 200, genuine
    assert genuine.body["eventId"] == event["id"]
    assert genuine.body["duplicate"] is False
    assert await payment_status(order, payment_id) == "PAYMENT_STATUS_AUTHORIZED"
    await order.wait_member(guest, "PAID")
    again = await post_webhook(api, body, stripe_signature(body))
    assert again.status == 200, again
    assert again.body["duplicate"] is True

    # the sandbox's own (held) deliveries arrive later and change nothing
    assert await api.sandbox_release("in_order") >= 1
    await eventually(
        lambda: api.sandbox_events(payment_intent=outcome["payment_intent"]),
        lambda events: {e["delivery"]["status"] for e in events} == {"delivered"},
        what="held webhooks delivered",
    )
    history = await api.stack.query(
        "payment",
        "SELECT to_status FROM payment_status_history WHERE payment_id = $1 ORDER BY id",
        payment_id,
    )
    assert [r["to_status"] for r in history].count("authorized") == 1, history
    cancelled = await api.call("POST", f"/group/{order.group_id}/cancel", order.host.user, {})
    assert cancelled.ok()["group"]["status"] == "GROUP_STATUS_CANCELLED"
    await eventually(order.ledger, lambda lg: lg["held"] == 0, what="the hold released")


async def test_people_only_reach_their_own_groups(api: Api) -> None:
    guest, stranger = Person.new("Gus"), Person.new("Stan")
    order = GroupOrder(api, Person.new("Hana"), [guest])
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    await order.open()
    path = f"/group/{order.group_id}"

    for method, suffix in (("GET", ""), ("GET", "/history")):
        reply = await api.call(method, path + suffix, stranger.user)
        assert reply.status in (403, 404), (suffix, reply)
    listed = (await api.call("GET", "/group", stranger.user)).ok()
    assert order.group_id not in {g["groupId"] for g in listed.get("groups", [])}
    joined = await api.call("POST", path + "/join", stranger.user, {"inviteToken": "guess"})
    assert joined.status in (403, 404), joined

    for action in ("force-finalize", "cancel"):
        member = await api.call("POST", f"{path}/{action}", guest.user, {})
        assert member.status == 403, (action, member)
        outsider = await api.call("POST", f"{path}/{action}", stranger.user, {})
        assert outsider.status in (403, 404), (action, outsider)
    anonymous = await api.request("GET", api.stack.gateway + path)
    assert anonymous.status == 401, anonymous

    group: Json = await order.get()
    assert group["status"] == "GROUP_STATUS_OPEN"
    assert (await order.statuses())[-1] == ("DRAFT", "OPEN")
    mine = await order.get(guest.user)  # the member still reads their own group
    assert mine["groupId"] == order.group_id
    await api.call("POST", f"{path}/cancel", order.host.user, {})


async def test_payments_orders_and_notifications_follow_group_membership(api: Api) -> None:
    """The payment, order and notification services ask the group service who may see what:
    a stranger sees nothing of a group, a member only their own payments and notifications,
    the host everything; nobody but our services may create a payment intent."""
    guest, other, stranger = Person.new("Gus"), Person.new("Olga"), Person.new("Stan")
    order = GroupOrder(api, Person.new("Hana"), [guest, other])
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    await order.open()
    gid = order.group_id

    everything = await api.payments(gid, order.host.user)
    assert len(everything) == 3
    mine = await api.payments(gid, guest.user)
    assert [p["memberId"] for p in mine] == [order.member_ids[guest.user]]
    theirs = next(p for p in everything if p["memberId"] == order.member_ids[other.user])
    assert (await api.call("GET", f"/payments/{theirs['paymentId']}", guest.user)).status == 404
    own = await api.call("GET", f"/payments/{mine[0]['paymentId']}", guest.user)
    assert own.ok()["payment"]["paymentLink"] == mine[0]["paymentLink"]

    for path, params in (
        ("/payments", {"group_id": gid}),
        ("/notifications", {"group_id": gid}),
        (f"/order/by-group/{gid}", None),
        (f"/payments/{theirs['paymentId']}", None),
    ):
        reply = await api.call("GET", path, stranger.user, params=params)
        assert reply.status == 404, (path, reply)

    await eventually(
        lambda: api.notifications(gid, order.host.user),
        lambda found: len(found) >= 3,
        what="an invitation per member",
    )
    guest_notes = await api.notifications(gid, guest.user)
    assert guest_notes
    assert {n["memberId"] for n in guest_notes} == {order.member_ids[guest.user]}

    sneaky = await api.call(
        "POST",
        "/payments/intents",
        guest.user,
        {
            "groupId": gid,
            "memberId": order.member_ids[guest.user],
            "attempt": 2,
            "amount": {"amountMinor": "1", "currencyCode": "USD"},
        },
    )
    assert sneaky.status == 404, sneaky  # service-only: the edge does not route it at all
    assert len(await api.payments(gid, order.host.user)) == 3  # nothing was created
    await api.call("POST", f"/group/{gid}/cancel", order.host.user, {})
