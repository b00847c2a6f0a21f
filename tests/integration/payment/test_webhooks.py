"""Webhooks end to end: signature checks, de-duplication under concurrency, out-of-order
delivery, a dropped webhook repaired by reconciliation, and a cancelled group's holds voided."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import nats

from mppo.devstack import Infra
from mppo.group.v1 import group_events_pb2
from mppo.payment.v1 import payment_pb2, payment_service_pb2
from mppo.platform.event_types import new_event
from mppo.platform.messaging import publish_event
from payment_svc.sandbox.config import DEV_WEBHOOK_SECRET
from payment_svc.sandbox.webhooks import sign
from tests.integration.payment.conftest import AS_ORDER, METADATA, PaymentStack, label_id
from tests.integration.payment.test_payment_flow import eventually

P = payment_pb2


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as r,
    ):
        return r.status, await r.json()


async def held_payment(stack: PaymentStack) -> tuple[payment_pb2.Payment, list[Any]]:
    """A payment the payer completed while webhooks are held: (payment, its events)."""
    await stack.sandbox.faults(reset=True, hold=True)
    payment = await stack.create(1800)
    # Keep the reconciler away so only the webhooks under test move this payment.
    await stack.query(
        "UPDATE payments SET next_check_at = now() + interval '1 hour' WHERE payment_id = $1",
        payment.payment_id,
    )
    await stack.sandbox.pay(payment.payment_link)
    events = await eventually(
        lambda: stack.sandbox.events(payment_intent=payment.provider_payment_id),
        lambda e: len(e) == 2,
    )
    return payment, events


async def history(stack: PaymentStack, payment_id: str) -> list[str]:
    rows = await stack.query(
        "SELECT to_status FROM payment_status_history WHERE payment_id = $1 ORDER BY id",
        payment_id,
    )
    return [r["to_status"] for r in rows]


async def test_bad_signatures_are_rejected_and_change_nothing(stack: PaymentStack) -> None:
    payment, events = await held_payment(stack)
    try:
        event = next(e for e in events if e["type"] == "checkout.session.completed")
        body = event["body"].encode()
        url = stack.bridge.webhook_url("sandbox")
        secret = stack.sandbox.webhook_secret
        tampered = body.replace(b'"amount_total": 1800', b'"amount_total": 1')
        assert tampered != body
        cases = {
            "tampered": (tampered, sign(secret, body)),
            "replayed after tolerance": (body, sign(secret, body, int(time.time()) - 400)),
            "dated in the future": (body, sign(secret, body, int(time.time()) + 400)),
            "wrong secret": (body, sign("whsec_not_ours", body)),
            "no signature": (body, ""),
            "garbage header": (body, "t=abc,v1=zz"),
        }
        for name, (payload, signature) in cases.items():
            headers = {"Stripe-Signature": signature} if signature else {}
            status, answer = await post(url, payload, headers)
            assert status == 401, (name, status, answer)
            assert answer["error"]["code"] == "UNAUTHENTICATED", name
        status, _ = await post(
            stack.bridge.webhook_url("nosuchpsp"), body, {"Stripe-Signature": sign(secret, body)}
        )
        assert status == 404
        assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_REQUIRES_ACTION
        rows = await stack.query(
            "SELECT count(*) AS n FROM webhook_events WHERE body LIKE $1",
            f"%{payment.provider_payment_id}%",
        )
        assert rows[0]["n"] == 0
        assert await stack.events_of(payment.payment_id) == ["payment.requested"]
        status, answer = await post(url, body, {"Stripe-Signature": sign(secret, body)})
        assert status == 200, answer
        assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_AUTHORIZED
    finally:
        await stack.sandbox.release()


async def test_same_webhook_twenty_times_changes_state_once(stack: PaymentStack) -> None:
    payment, events = await held_payment(stack)
    try:
        event = next(e for e in events if e["type"] == "checkout.session.completed")
        url = stack.bridge.webhook_url("sandbox")

        async def deliver() -> tuple[int, Any]:
            signed = await stack.sandbox.signed(event["id"])
            return await post(url, signed["body"].encode(), signed["headers"])

        concurrent = await asyncio.gather(*(deliver() for _ in range(10)))
        sequential = [await deliver() for _ in range(10)]
        answers = concurrent + sequential
        assert all(status == 200 for status, _ in answers), answers
        assert sum(1 for _, a in answers if not a["duplicate"]) == 1
        assert {a["event_id"] for _, a in answers} == {event["id"]}
    finally:
        await stack.sandbox.release()
    await eventually(
        lambda: stack.sandbox.events(payment_intent=payment.provider_payment_id),
        lambda e: all(x["delivery"]["status"] == "delivered" for x in e),
    )
    assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_AUTHORIZED
    assert await history(stack, payment.payment_id) == ["requires_action", "authorized"]
    assert await stack.events_of(payment.payment_id) == ["payment.requested", "payment.succeeded"]
    rows = await stack.query(
        "SELECT count(*) AS n FROM webhook_events WHERE event_id = $1", event["id"]
    )
    assert rows[0]["n"] == 1


async def test_capture_webhook_before_authorization_webhook(stack: PaymentStack) -> None:
    payment, _ = await held_payment(stack)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.sandbox.url}/v1/payment_intents/{payment.provider_payment_id}/capture",
            headers={"Authorization": f"Bearer {stack.sandbox.api_key}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    events = await stack.sandbox.events(payment_intent=payment.provider_payment_id)
    assert [e["type"] for e in events][-1] == "payment_intent.succeeded"
    await stack.sandbox.release(order="reverse")
    final = await eventually(
        lambda: stack.get(payment.payment_id), lambda p: p.status == P.PAYMENT_STATUS_CAPTURED
    )
    assert final.amount_captured.amount_minor == 1800
    await eventually(
        lambda: stack.sandbox.events(payment_intent=payment.provider_payment_id),
        lambda e: all(x["delivery"]["status"] == "delivered" for x in e),
    )
    assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_CAPTURED
    assert await history(stack, payment.payment_id) == ["requires_action", "authorized", "captured"]
    assert await stack.events_of(payment.payment_id) == [
        "payment.requested",
        "payment.succeeded",
        "payment.captured",
    ]
    outcomes = await stack.query(
        "SELECT event_type, outcome FROM webhook_events WHERE payment_id = $1",
        payment.payment_id,
    )
    by_type = {r["event_type"]: r["outcome"] for r in outcomes}
    assert by_type["payment_intent.succeeded"] == "refetched"
    assert by_type["checkout.session.completed"] == "stale"


async def test_dropped_webhooks_are_repaired_by_reconciliation(stack: PaymentStack) -> None:
    await stack.sandbox.faults(reset=True, drop_next=2)
    payment = await stack.create(1300)
    await stack.sandbox.pay(payment.payment_link)
    events = await stack.sandbox.events(payment_intent=payment.provider_payment_id)
    assert {e["delivery"]["status"] for e in events} == {"dropped"}
    repaired = await eventually(
        lambda: stack.get(payment.payment_id),
        lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED,
        within=20,
    )
    assert repaired.authorization_expire_time.seconds > time.time()
    rows = await stack.query(
        "SELECT reason FROM payment_status_history WHERE payment_id = $1 AND to_status = $2",
        payment.payment_id,
        "authorized",
    )
    assert [r["reason"] for r in rows] == ["provider re-read"]
    assert await stack.events_of(payment.payment_id) == ["payment.requested", "payment.succeeded"]


async def test_sandbox_retries_a_failing_delivery(stack: PaymentStack) -> None:
    await stack.sandbox.faults(reset=True, fail_next=3)
    payment = await stack.create(450)
    await stack.sandbox.pay(payment.payment_link)
    await eventually(
        lambda: stack.get(payment.payment_id), lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED
    )
    events = await eventually(
        lambda: stack.sandbox.events(payment_intent=payment.provider_payment_id),
        lambda e: all(x["delivery"]["status"] == "delivered" for x in e),
    )
    assert max(e["delivery"]["attempts"] for e in events) >= 2


async def test_group_cancelled_voids_every_hold_and_refunds_captures(
    stack: PaymentStack, infra: Infra
) -> None:
    await stack.sandbox.faults(reset=True)
    group = str(uuid.uuid4())
    held = [await stack.create(1000 + i, group_id=group, member=f"m{i}") for i in range(2)]
    for payment in held:
        await stack.sandbox.pay(payment.payment_link)
    captured = await stack.create(2000, group_id=group, member="m-captured")
    await stack.sandbox.pay(captured.payment_link)
    unpaid = await stack.create(3000, group_id=group, member="m-unpaid")
    for payment in [*held, captured]:
        await eventually(
            lambda p=payment: stack.get(p.payment_id),  # type: ignore[misc]
            lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED,
        )
    await stack.stub.CapturePayment(
        payment_service_pb2.CapturePaymentRequest(payment_id=captured.payment_id),
        metadata=AS_ORDER,
        timeout=20,
    )
    before = await stack.sandbox.ledger(group_id=group)
    assert before["held"] == 1000 + 1001
    assert before["kept"] == 2000

    client = await nats.connect(infra.nats_url)
    try:
        message = group_events_pb2.GroupCancelled(
            group_id=group, payment_ids=[held[0].payment_id], reason="host cancelled", actor="u1"
        )
        await publish_event(client.jetstream(), new_event(group, message), stack.nats_prefix)
    finally:
        await client.close()

    async def statuses() -> dict[str, int]:
        listed = await stack.stub.ListPayments(
            payment_service_pb2.ListPaymentsRequest(group_id=group),
            metadata=METADATA,
            timeout=10,
        )
        return {p.member_id: p.status for p in listed.payments}

    final = await eventually(
        statuses,
        lambda s: (
            s
            == {
                label_id("m0"): P.PAYMENT_STATUS_VOIDED,
                label_id("m1"): P.PAYMENT_STATUS_VOIDED,
                label_id("m-captured"): P.PAYMENT_STATUS_REFUNDED,
                label_id("m-unpaid"): P.PAYMENT_STATUS_VOIDED,
            }
        ),
        within=30,
    )
    assert final
    after = await stack.sandbox.ledger(group_id=group)
    assert after["held"] == 0
    assert after["kept"] == 0
    late = await stack.sandbox.pay(unpaid.payment_link)
    assert late["error"]["code"] == "checkout_not_open", json.dumps(late)
    for payment in held:
        types = await stack.events_of(payment.payment_id)
        assert types == ["payment.requested", "payment.succeeded", "payment.voided"]


async def test_a_webhook_naming_a_payment_only_in_its_metadata_changes_nothing(
    stack: PaymentStack,
) -> None:
    """The sandbox's development secret is published (docs/payment.md). An event signed with it
    that names someone's payment in metadata.payment_id, with a payment intent of its own, is
    recorded and ignored: the payment is not AUTHORIZED, nobody is PAID."""
    await stack.sandbox.faults(reset=True)
    victim = await stack.create(4200)
    forged = {
        "id": f"evt_forged_{uuid.uuid4().hex[:12]}",
        "object": "event",
        "type": "payment_intent.amount_capturable_updated",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "pi_forged000000000000000",
                "object": "payment_intent",
                "amount": 4200,
                "amount_capturable": 4200,
                "status": "requires_capture",
                "metadata": {"payment_id": victim.payment_id},
            }
        },
    }
    session = {
        "id": f"evt_forged_{uuid.uuid4().hex[:12]}",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": "cs_test_forged00000000000",
                "object": "checkout.session",
                "payment_intent": "pi_forged000000000000000",
                "payment_status": "unpaid",
                "amount_total": 4200,
                "client_reference_id": victim.payment_id,
                "metadata": {"payment_id": victim.payment_id},
            }
        },
    }
    url = stack.bridge.webhook_url("sandbox")
    for event in (forged, session):
        body = json.dumps(event).encode()
        status, answer = await post(url, body, {"Stripe-Signature": sign(DEV_WEBHOOK_SECRET, body)})
        assert status == 200, answer  # recorded: the sender has nothing to retry
        assert answer["event_id"] == event["id"]
    assert (await stack.get(victim.payment_id)).status == P.PAYMENT_STATUS_REQUIRES_ACTION
    assert await stack.events_of(victim.payment_id) == ["payment.requested"]
    rows = await stack.query(
        "SELECT outcome, payment_id, detail FROM webhook_events WHERE event_id = ANY($1)",
        [forged["id"], session["id"]],
    )
    assert [(r["outcome"], r["payment_id"]) for r in rows] == [("mismatch", None)] * 2
    assert all(victim.payment_id in r["detail"] for r in rows)
    mapped = await stack.query(
        "SELECT provider_payment_id FROM provider_payment_map WHERE payment_id = $1",
        victim.payment_id,
    )
    assert "pi_forged000000000000000" not in {r["provider_payment_id"] for r in mapped}
    # the real payer still pays, and that is applied
    await stack.sandbox.pay(victim.payment_link)
    await eventually(
        lambda: stack.get(victim.payment_id), lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED
    )


def _event(obj: object, event_type: str = "payment_intent.succeeded") -> bytes:
    return json.dumps(
        {"id": f"evt_bad_{uuid.uuid4().hex[:8]}", "type": event_type, "data": {"object": obj}}
    ).encode()


async def test_signed_bodies_of_the_wrong_shape_are_400_and_recorded(stack: PaymentStack) -> None:
    url = stack.bridge.webhook_url("sandbox")
    secret = stack.sandbox.webhook_secret
    bodies = {
        "object is a string": b'{"data": {"object": "x"}}',
        "object is a string, with id and type": _event("x"),
        "amount of the wrong type": _event(
            {"object": "payment_intent", "id": "pi_1", "amount_received": "lots"}
        ),
        "metadata of the wrong type": _event(
            {"object": "payment_intent", "id": "pi_1", "metadata": ["payment_id"]}
        ),
        "no payment named": _event({"object": "payment_intent"}),
        "deep nesting": b'{"id": "evt_deep", "type": "x", "data": ' + b"[" * 3000 + b"]" * 3000,
        "not JSON": b"\x00\x01 not json",
        "an array": b"[]",
    }
    before = stack.bridge.answered.get(500, 0)
    for name, body in bodies.items():
        status, answer = await post(url, body, {"Stripe-Signature": sign(secret, body)})
        assert status == 400, (name, status, answer)
        assert answer["error"]["code"] == "INVALID_ARGUMENT", name
    assert stack.bridge.answered.get(500, 0) == before
    rows = await stack.query(
        "SELECT event_id, detail, body FROM webhook_events WHERE outcome = 'malformed'"
    )
    assert len(rows) >= len(bodies)
    assert all(r["event_id"].startswith("malformed:sha256:") for r in rows)
    assert all(r["body"] == "" and r["detail"] for r in rows)
