"""The Stripe adapter's webhook steps (signature, tolerance, parsing) and state mapping."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import pytest

from payment_svc.adapters.providers.base import (
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)
from payment_svc.adapters.providers.stripe import StripeProvider, intent_state
from payment_svc.sandbox.webhooks import sign

SECRET = "whsec_unit"


def provider() -> StripeProvider:
    return StripeProvider(name="sandbox", api_key="sk_test", webhook_secret=SECRET)


def request(body: bytes, signature: str) -> WebhookRequest:
    return WebhookRequest(
        "POST", "/payments/webhook/sandbox", {"stripe-signature": signature}, body
    )


def event(event_type: str, obj: Mapping[str, object]) -> bytes:
    return json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": event_type,
            "created": 1,
            "data": {"object": dict(obj)},
        }
    ).encode()


async def test_valid_signature_passes_and_bad_ones_fail() -> None:
    body = event("payment_intent.succeeded", {"object": "payment_intent", "id": "pi_1"})
    await provider().verify_webhook(request(body, sign(SECRET, body)))
    bad = [
        sign(SECRET, body + b" "),
        sign("whsec_other", body),
        sign(SECRET, body, int(time.time()) - 301),
        "nonsense",
    ]
    for signature in bad:
        with pytest.raises(WebhookVerificationError):
            await provider().verify_webhook(request(body, signature))
    with pytest.raises(WebhookVerificationError):
        await provider().verify_webhook(WebhookRequest("POST", "/", {}, body))


def test_event_mapping() -> None:
    p = provider()
    session = {
        "object": "checkout.session",
        "id": "cs_1",
        "payment_intent": "pi_1",
        "payment_status": "unpaid",
        "amount_total": 900,
        "metadata": {"payment_id": "pay-1"},
    }
    parsed = p.parse_event(request(event("checkout.session.completed", session), ""))
    assert (parsed.status, parsed.provider_payment_id, parsed.amount_minor) == (
        ProviderStatus.AUTHORIZED,
        "pi_1",
        900,
    )
    assert parsed.merchant_reference == "pay-1"
    charge = {"object": "charge", "payment_intent": "pi_1", "amount_captured": 900}
    partial = p.parse_event(
        request(event("charge.refunded", {**charge, "amount_refunded": 100}), "")
    )
    assert partial.status is ProviderStatus.PARTIALLY_REFUNDED
    full = p.parse_event(request(event("charge.refunded", {**charge, "amount_refunded": 900}), ""))
    assert full.status is ProviderStatus.REFUNDED
    failed = p.parse_event(
        request(
            event(
                "payment_intent.payment_failed",
                {"object": "payment_intent", "id": "pi_1", "last_payment_error": {"code": "x"}},
            ),
            "",
        )
    )
    assert (failed.status, failed.failure_reason) == (ProviderStatus.FAILED, "x")
    other = p.parse_event(request(event("customer.created", {"object": "customer", "id": "c"}), ""))
    assert other.status is None
    with pytest.raises(WebhookVerificationError):
        p.parse_event(request(b"not json", ""))


def test_intent_state() -> None:
    base = {"id": "pi_1", "amount": 500, "amount_capturable": 0, "amount_received": 0}
    assert intent_state({**base, "status": "requires_payment_method"}).status is (
        ProviderStatus.REQUIRES_ACTION
    )
    held = intent_state(
        {
            **base,
            "status": "requires_capture",
            "amount_capturable": 500,
            "latest_charge": {
                "amount_refunded": 0,
                "payment_method_details": {"card": {"capture_before": 2000000000}},
            },
        }
    )
    assert held.status is ProviderStatus.AUTHORIZED
    assert held.authorization_expires_at is not None
    refunded = intent_state(
        {
            **base,
            "status": "succeeded",
            "amount_received": 500,
            "latest_charge": {"amount_refunded": 500},
        }
    )
    assert refunded.status is ProviderStatus.REFUNDED
    assert intent_state({**base, "status": "canceled"}).status is ProviderStatus.VOIDED


async def test_a_timestamp_in_the_future_beyond_the_tolerance_is_refused() -> None:
    """stripe's SDK only refuses old timestamps; a signature dated ahead (a captured secret
    signing events for later) is refused too."""
    body = event("payment_intent.succeeded", {"object": "payment_intent", "id": "pi_1"})
    now = int(time.time())
    await provider().verify_webhook(request(body, sign(SECRET, body, now + 250)))
    for ahead in (301, 400, 10**9):
        with pytest.raises(WebhookVerificationError, match="future"):
            await provider().verify_webhook(request(body, sign(SECRET, body, now + ahead)))


async def test_verification_does_not_parse_the_body() -> None:
    """A correctly signed body of the wrong shape passes verification (it is authentic) and is
    refused by parsing (INVALID_ARGUMENT), not as a bad signature."""
    for body in (b"[" * 5000 + b"]" * 5000, b"not json", b'{"data": {"object": "x"}}'):
        await provider().verify_webhook(request(body, sign(SECRET, body)))
        with pytest.raises(WebhookVerificationError, match="malformed"):
            provider().parse_event(request(body, sign(SECRET, body)))


def _shaped(**fields: object) -> bytes:
    return json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", **fields}).encode()


MALFORMED = [
    b"not json",
    b"\xff\xfe",
    b"[]",
    b'"text"',
    b'{"data": {"object": "x"}}',
    _shaped(data={"object": "x"}),
    _shaped(data="x"),
    _shaped(data=None),
    _shaped(),
    json.dumps({"id": {"a": 1}, "type": "x", "data": {"object": {}}}).encode(),
    json.dumps({"id": "evt_1", "type": 7, "data": {"object": {}}}).encode(),
    json.dumps({"id": "evt\n1", "type": "x", "data": {"object": {}}}).encode(),
    json.dumps({"id": "e" * 300, "type": "x", "data": {"object": {}}}).encode(),
    _shaped(data={"object": {"object": "payment_intent", "id": 5}}),
    _shaped(data={"object": {"object": "payment_intent"}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "amount_received": "9"}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "amount_received": -1}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "amount_received": 1.5}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "amount_received": True}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "amount_received": 2**70}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "metadata": "x"}}),
    _shaped(data={"object": {"object": "payment_intent", "id": "pi_1", "last_payment_error": 3}}),
    _shaped(
        data={"object": {"object": "payment_intent", "id": "pi_1", "metadata": {"payment_id": []}}}
    ),
    _shaped(created="yesterday", data={"object": {"object": "payment_intent", "id": "pi_1"}}),
    json.dumps(
        {
            "id": "evt_1",
            "type": "checkout.session.completed",
            "data": {"object": {"object": "checkout.session", "id": "cs_1", "amount_total": "x"}},
        }
    ).encode(),
    json.dumps(
        {
            "id": "evt_1",
            "type": "charge.refunded",
            "data": {"object": {"object": "charge", "payment_intent": {"id": 3}}},
        }
    ).encode(),
    b'{"id": "evt_1", "type": "x", "data": {"object": ' + b"[" * 40 + b"]" * 40 + b"}}",
    b'{"id": "evt_1", "type": "x", "data": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
]


@pytest.mark.parametrize("body", MALFORMED)
def test_bodies_of_the_wrong_shape_are_refused_as_malformed(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError, match="malformed"):
        provider().parse_event(request(body, ""))


def test_a_huge_creation_time_is_not_an_error() -> None:
    body = _shaped(created=2**62, data={"object": {"object": "customer", "id": "c"}})
    assert provider().parse_event(request(body, "")).created_at is None


def test_a_checkout_session_names_its_intent_and_itself() -> None:
    session: dict[str, object] = {
        "object": "checkout.session",
        "id": "cs_1",
        "payment_intent": "pi_1",
    }
    parsed = provider().parse_event(request(event("checkout.session.completed", session), ""))
    assert parsed.provider_ids == ("pi_1", "cs_1")
    lazy: dict[str, object] = {"object": "checkout.session", "id": "cs_2", "payment_intent": None}
    parsed = provider().parse_event(request(event("checkout.session.expired", lazy), ""))
    assert parsed.provider_ids == ("cs_2",)


def test_a_reference_that_cannot_be_ours_is_no_reason_to_refuse_the_event() -> None:
    """Other integrations on the same account put what they like in metadata."""
    intent = {
        "object": "payment_intent",
        "id": "pi_1",
        "metadata": {"payment_id": "order 123 — theirs"},
        "client_reference_id": "x" * 400,
    }
    parsed = provider().parse_event(request(event("payment_intent.succeeded", intent), ""))
    assert parsed.merchant_reference == ""
    assert parsed.provider_payment_id == "pi_1"
