"""Razorpay webhook verification (hex HMAC-SHA256 of the raw body) and event mapping."""

from __future__ import annotations

import json

import pytest

from payment_svc.adapters.providers.base import (
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)
from payment_svc.adapters.providers.razorpay import RazorpayProvider
from payment_svc.simulators.razorpay import sign

SECRET = "unit-webhook-secret"
PROVIDER = RazorpayProvider(
    key_id="rzp_test_unit", key_secret="unit", webhook_secret=SECRET, api_base="http://127.0.0.1:9"
)
LINK = {
    "id": "plink_Unit000000001",
    "amount": 5000,
    "amount_paid": 5000,
    "status": "paid",
    "reference_id": "pay-ours-1",
}


def _payment(status: str, refunded: int = 0) -> dict[str, object]:
    return {
        "id": "pay_Unit0000000001",
        "entity": "payment",
        "amount": 5000,
        "currency": "INR",
        "status": status,
        "amount_refunded": refunded,
        "error_description": "Card declined" if status == "failed" else None,
    }


def _request(
    event: str,
    entities: dict[str, object],
    *,
    secret: str = SECRET,
    event_id: str | None = "evt_Unit1",
) -> WebhookRequest:
    body = json.dumps(
        {
            "entity": "event",
            "account_id": "acc_Unit",
            "event": event,
            "contains": list(entities),
            "payload": {name: {"entity": entity} for name, entity in entities.items()},
            "created_at": 1_700_000_000,
        }
    ).encode()
    headers = {"x-razorpay-signature": sign(body, secret), "content-type": "application/json"}
    if event_id:
        headers["x-razorpay-event-id"] = event_id
    return WebhookRequest("POST", "/payments/webhook/razorpay", headers, body)


@pytest.mark.parametrize(
    ("event", "entities", "provider_id", "status", "amount"),
    [
        (
            "payment.authorized",
            {"payment": _payment("authorized")},
            "pay_Unit0000000001",
            ProviderStatus.AUTHORIZED,
            5000,
        ),
        (
            "payment.captured",
            {"payment": _payment("captured")},
            "pay_Unit0000000001",
            ProviderStatus.CAPTURED,
            5000,
        ),
        (
            "payment.failed",
            {"payment": _payment("failed")},
            "pay_Unit0000000001",
            ProviderStatus.FAILED,
            5000,
        ),
        (
            "payment_link.paid",
            {"payment_link": LINK, "payment": _payment("captured")},
            "plink_Unit000000001",
            ProviderStatus.CAPTURED,
            5000,
        ),
        (
            "payment_link.paid",
            {"payment_link": LINK, "payment": _payment("authorized")},
            "plink_Unit000000001",
            ProviderStatus.AUTHORIZED,
            5000,
        ),
        (
            "payment_link.cancelled",
            {"payment_link": LINK},
            "plink_Unit000000001",
            ProviderStatus.VOIDED,
            0,
        ),
        (
            "payment_link.expired",
            {"payment_link": LINK},
            "plink_Unit000000001",
            ProviderStatus.EXPIRED,
            0,
        ),
        (
            "refund.processed",
            {
                "refund": {"id": "rfnd_1", "amount": 1000, "payment_id": "pay_Unit0000000001"},
                "payment": _payment("captured", 1000),
            },
            "pay_Unit0000000001",
            ProviderStatus.PARTIALLY_REFUNDED,
            1000,
        ),
        (
            "refund.processed",
            {
                "refund": {"id": "rfnd_2", "amount": 5000, "payment_id": "pay_Unit0000000001"},
                "payment": _payment("refunded", 5000),
            },
            "pay_Unit0000000001",
            ProviderStatus.REFUNDED,
            5000,
        ),
        (
            "payment.refunded",
            {"payment": _payment("refunded", 5000)},
            "pay_Unit0000000001",
            ProviderStatus.REFUNDED,
            5000,
        ),
        ("order.paid", {"payment": _payment("captured")}, "pay_Unit0000000001", None, 0),
    ],
)
async def test_events_verify_and_map(
    event: str,
    entities: dict[str, object],
    provider_id: str,
    status: ProviderStatus | None,
    amount: int,
) -> None:
    request = _request(event, entities)
    await PROVIDER.verify_webhook(request)
    parsed = PROVIDER.parse_event(request)
    assert parsed.event_id == "evt_Unit1"
    assert parsed.event_type == event
    assert parsed.provider_payment_id == provider_id
    assert parsed.status is status
    assert parsed.amount_minor == amount
    assert parsed.created_at is not None
    assert parsed.created_at.timestamp() == 1_700_000_000
    if status is ProviderStatus.FAILED:
        assert parsed.failure_reason == "Card declined"


async def test_tampered_wrong_secret_and_missing_signature_are_rejected() -> None:
    good = _request("payment.captured", {"payment": _payment("captured")})
    tampered = WebhookRequest("POST", "/", good.headers, good.body.replace(b"5000", b"5"))
    with pytest.raises(WebhookVerificationError):
        await PROVIDER.verify_webhook(tampered)
    with pytest.raises(WebhookVerificationError):
        await PROVIDER.verify_webhook(
            _request("payment.captured", {"payment": _payment("captured")}, secret="other")
        )
    unsigned = {k: v for k, v in good.headers.items() if k != "x-razorpay-signature"}
    with pytest.raises(WebhookVerificationError, match="missing"):
        await PROVIDER.verify_webhook(WebhookRequest("POST", "/", unsigned, good.body))
    non_ascii = dict(good.headers, **{"x-razorpay-signature": "é" * 64})
    with pytest.raises(WebhookVerificationError):
        await PROVIDER.verify_webhook(WebhookRequest("POST", "/", non_ascii, good.body))


def test_event_id_falls_back_to_a_body_hash_so_redeliveries_still_dedupe() -> None:
    one = _request("payment.captured", {"payment": _payment("captured")}, event_id=None)
    again = WebhookRequest("POST", "/", dict(one.headers), one.body)
    first, second = PROVIDER.parse_event(one), PROVIDER.parse_event(again)
    assert first.event_id.startswith("sha256:")
    assert first.event_id == second.event_id


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"payload": {}}'])
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError):
        PROVIDER.parse_event(WebhookRequest("POST", "/", {}, body))


def test_a_state_event_that_names_no_payment_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="names no payment"):
        PROVIDER.parse_event(_request("payment.captured", {"payment": {}}))


def test_our_payment_id_comes_back_as_merchant_reference() -> None:
    paid = PROVIDER.parse_event(
        _request("payment_link.paid", {"payment_link": LINK, "payment": _payment("captured")})
    )
    assert paid.merchant_reference == "pay-ours-1"
    noted = dict(_payment("captured"), notes={"mppo_payment_id": "pay-ours-2"})
    assert (
        PROVIDER.parse_event(_request("payment.captured", {"payment": noted})).merchant_reference
        == "pay-ours-2"
    )
    # Razorpay sends empty notes as a list
    bare = dict(_payment("captured"), notes=[])
    assert (
        PROVIDER.parse_event(_request("payment.captured", {"payment": bare})).merchant_reference
        == ""
    )


def _raw(body: object) -> WebhookRequest:
    data = json.dumps(body).encode()
    return WebhookRequest("POST", "/", {"x-razorpay-signature": sign(data, SECRET)}, data)


def _event(**payload: object) -> dict[str, object]:
    return {"event": "payment.captured", "payload": payload, "created_at": 1_700_000_000}


@pytest.mark.parametrize(
    "body",
    [
        {"event": 5},
        {"event": "payment.captured", "payload": "x"},
        {"event": "payment.captured", "payload": []},
        _event(payment="x"),
        _event(payment={"entity": "x"}),
        _event(payment={"entity": {"id": 7}}),
        _event(payment={"entity": {"id": "pay_1", "amount": "5000"}}),
        _event(payment={"entity": {"id": "pay_1", "amount": -5}}),
        _event(payment={"entity": {"id": "pay_1", "amount_refunded": 1.5}}),
        _event(payment={"entity": {"id": "pay_1", "status": {"x": 1}}}),
        _event(payment={"entity": {"id": "pay_1", "error_description": 3}}),
        _event(payment={"entity": {"id": "pay_1", "reference_id": ["x"]}}),
        _event(payment={"entity": {"id": "pay_1", "notes": {"mppo_payment_id": 3}}}),
        {**_event(payment={"entity": {"id": "pay_1"}}), "created_at": "today"},
        {
            "event": "payment_link.paid",
            "payload": {"payment_link": {"entity": {"id": "plink_1", "amount_paid": "1"}}},
        },
        {
            "event": "refund.processed",
            "payload": {"refund": {"entity": {"payment_id": 3, "amount": 100}}},
        },
        {"event": "refund.processed", "payload": {"refund": {"entity": {"amount": "9"}}}},
        _event(payment={"entity": {"id": "pay\u00e9"}}),
    ],
)
def test_bodies_of_the_wrong_shape_are_refused_as_malformed(body: object) -> None:
    with pytest.raises(WebhookVerificationError, match="malformed"):
        PROVIDER.parse_event(_raw(body))


def test_deep_nesting_and_non_utf8_are_refused_as_malformed() -> None:
    for data in (
        b"[" * 5000 + b"]" * 5000,
        b'{"event": "x", "payload": ' + b"[" * 40 + b"]" * 40 + b"}",
        b"\xff",
    ):
        with pytest.raises(WebhookVerificationError, match="malformed"):
            PROVIDER.parse_event(WebhookRequest("POST", "/", {}, data))


def test_a_link_event_names_the_payment_made_on_it_too() -> None:
    paid = PROVIDER.parse_event(
        _request("payment_link.paid", {"payment_link": LINK, "payment": _payment("captured")})
    )
    assert paid.provider_ids == ("plink_Unit000000001", "pay_Unit0000000001")
