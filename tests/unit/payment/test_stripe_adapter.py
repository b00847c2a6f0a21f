"""The Stripe adapter's webhook steps (signature, tolerance, parsing) and state mapping."""

from __future__ import annotations

import json
import time

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


def event(event_type: str, obj: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": event_type,
            "created": 1,
            "data": {"object": obj},
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
