"""PayPal: event mapping, order → state mapping and amount formatting (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from payment_svc.adapters.providers.base import (
    ProviderError,
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)
from payment_svc.adapters.providers.paypal import PayPalProvider, order_state, paypal_value

PROVIDER = PayPalProvider(
    client_id="unit", client_secret="unit", webhook_id="WH-UNIT", api_base="http://127.0.0.1:9"
)
USD_10 = {"currency_code": "USD", "value": "10.00"}


def _event(event_type: str, resource: dict[str, Any]) -> WebhookRequest:
    body = {
        "id": "WH-1AB",
        "event_version": "1.0",
        "create_time": "2025-01-02T03:04:05Z",
        "resource_type": "x",
        "event_type": event_type,
        "resource": resource,
    }
    return WebhookRequest("POST", "/payments/webhook/paypal", {}, json.dumps(body).encode())


def _related(**extra: Any) -> dict[str, Any]:
    return {"supplementary_data": {"related_ids": {"order_id": "ORDER1"}}, **extra}


@pytest.mark.parametrize(
    ("event_type", "resource", "provider_id", "status", "amount"),
    [
        (
            "CHECKOUT.ORDER.APPROVED",
            {"id": "ORDER1", "status": "APPROVED", "purchase_units": [{"custom_id": "ours-1"}]},
            "ORDER1",
            None,
            0,
        ),
        (
            "PAYMENT.AUTHORIZATION.CREATED",
            _related(id="AUTH1", amount=USD_10),
            "ORDER1",
            ProviderStatus.AUTHORIZED,
            1000,
        ),
        (
            "PAYMENT.AUTHORIZATION.VOIDED",
            _related(id="AUTH1", amount=USD_10),
            "ORDER1",
            ProviderStatus.VOIDED,
            1000,
        ),
        (
            "PAYMENT.CAPTURE.COMPLETED",
            _related(id="CAP1", amount=USD_10),
            "ORDER1",
            ProviderStatus.CAPTURED,
            1000,
        ),
        (
            "PAYMENT.CAPTURE.DENIED",
            _related(id="CAP1", amount=USD_10, status="DECLINED"),
            "ORDER1",
            ProviderStatus.FAILED,
            1000,
        ),
        (
            "PAYMENT.CAPTURE.REFUNDED",
            {
                "id": "REF1",
                "amount": {"currency_code": "USD", "value": "2.5"},
                "links": [{"rel": "up", "href": "https://api/v2/payments/captures/CAP1"}],
            },
            "CAP1",
            ProviderStatus.PARTIALLY_REFUNDED,
            250,
        ),
        ("PAYMENT.SALE.COMPLETED", {"id": "S1"}, "", None, 0),
    ],
)
def test_events_map(
    event_type: str,
    resource: dict[str, Any],
    provider_id: str,
    status: ProviderStatus | None,
    amount: int,
) -> None:
    event = PROVIDER.parse_event(_event(event_type, resource))
    assert event.event_id == "WH-1AB"
    assert (event.provider_payment_id, event.status, event.amount_minor) == (
        provider_id,
        status,
        amount,
    )
    assert event.created_at is not None
    if status is ProviderStatus.FAILED:
        assert event.failure_reason == "DECLINED"


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"id": "WH-1"}', b'{"event_type": "X"}'])
def test_malformed_events_are_rejected(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError):
        PROVIDER.parse_event(WebhookRequest("POST", "/", {}, body))


def test_state_event_without_an_order_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError):
        PROVIDER.parse_event(_event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAP1"}))


async def test_missing_transmission_headers_are_rejected_locally() -> None:
    with pytest.raises(WebhookVerificationError, match="missing"):
        await PROVIDER.verify_webhook(_event("CHECKOUT.ORDER.APPROVED", {"id": "O"}))


def _order(status: str = "COMPLETED", **payments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "ORDER1",
        "status": status,
        "purchase_units": [{"amount": USD_10, "payments": payments}],
    }


AUTH = {
    "id": "AUTH1",
    "status": "CREATED",
    "amount": USD_10,
    "expiration_time": "2030-01-01T00:00:00Z",
}


@pytest.mark.parametrize(
    ("order", "status", "captured", "refunded"),
    [
        (
            {"id": "ORDER1", "status": "PAYER_ACTION_REQUIRED", "purchase_units": [{}]},
            ProviderStatus.REQUIRES_ACTION,
            0,
            0,
        ),
        (
            {"id": "ORDER1", "status": "APPROVED", "purchase_units": [{}]},
            ProviderStatus.REQUIRES_ACTION,
            0,
            0,
        ),
        ({"id": "ORDER1", "status": "VOIDED", "purchase_units": [{}]}, ProviderStatus.VOIDED, 0, 0),
        (_order(authorizations=[AUTH]), ProviderStatus.AUTHORIZED, 0, 0),
        (_order(authorizations=[dict(AUTH, status="VOIDED")]), ProviderStatus.VOIDED, 0, 0),
        (_order(authorizations=[dict(AUTH, status="DENIED")]), ProviderStatus.FAILED, 0, 0),
        (_order(authorizations=[dict(AUTH, status="EXPIRED")]), ProviderStatus.EXPIRED, 0, 0),
        (
            _order(authorizations=[dict(AUTH, status="PENDING")]),
            ProviderStatus.REQUIRES_ACTION,
            0,
            0,
        ),
        (
            _order(
                authorizations=[dict(AUTH, status="CAPTURED")],
                captures=[{"id": "C", "status": "COMPLETED", "amount": USD_10}],
            ),
            ProviderStatus.CAPTURED,
            1000,
            0,
        ),
        (
            _order(
                authorizations=[dict(AUTH, status="CAPTURED")],
                captures=[{"id": "C", "status": "PARTIALLY_REFUNDED", "amount": USD_10}],
                refunds=[
                    {
                        "id": "R",
                        "status": "COMPLETED",
                        "amount": {"currency_code": "USD", "value": "4.00"},
                    },
                    {
                        "id": "R2",
                        "status": "PENDING",
                        "amount": {"currency_code": "USD", "value": "6.00"},
                    },
                ],
            ),
            ProviderStatus.PARTIALLY_REFUNDED,
            1000,
            400,
        ),
        (
            _order(
                authorizations=[dict(AUTH, status="CAPTURED")],
                captures=[{"id": "C", "status": "REFUNDED", "amount": USD_10}],
                refunds=[{"id": "R", "status": "COMPLETED", "amount": USD_10}],
            ),
            ProviderStatus.REFUNDED,
            1000,
            1000,
        ),
        (
            _order(
                authorizations=[AUTH],
                captures=[{"id": "C", "status": "DECLINED", "amount": USD_10}],
            ),
            ProviderStatus.FAILED,
            0,
            0,
        ),
    ],
)
def test_order_state(
    order: dict[str, Any], status: ProviderStatus, captured: int, refunded: int
) -> None:
    state = order_state(order)
    assert state.provider_payment_id == "ORDER1"
    assert (state.status, state.amount_captured_minor, state.amount_refunded_minor) == (
        status,
        captured,
        refunded,
    )


def test_authorization_expiry_is_reported() -> None:
    state = order_state(_order(authorizations=[AUTH]))
    assert state.authorization_expires_at is not None
    assert state.authorization_expires_at.year == 2030
    assert state.amount_authorized_minor == 1000


@pytest.mark.parametrize(
    ("amount", "code", "value"),
    [(1050, "USD", "10.50"), (1050, "JPY", "1050"), (150000, "HUF", "1500"), (20000, "TWD", "200")],
)
def test_paypal_values(amount: int, code: str, value: str) -> None:
    assert paypal_value(amount, code) == value


@pytest.mark.parametrize(("amount", "code"), [(150050, "HUF"), (-1, "USD"), (100, "usd")])
def test_unrepresentable_amounts_are_final_errors(amount: int, code: str) -> None:
    with pytest.raises(ProviderError) as err:
        paypal_value(amount, code)
    assert not err.value.retryable


def test_our_payment_id_comes_back_as_merchant_reference() -> None:
    order = {"id": "ORDER1", "purchase_units": [{"custom_id": "ours-1"}]}
    approved = PROVIDER.parse_event(_event("CHECKOUT.ORDER.APPROVED", order))
    assert approved.merchant_reference == "ours-1"
    captured = PROVIDER.parse_event(
        _event("PAYMENT.CAPTURE.COMPLETED", _related(id="C", amount=USD_10, custom_id="ours-2"))
    )
    assert captured.merchant_reference == "ours-2"
    bare = PROVIDER.parse_event(_event("PAYMENT.CAPTURE.COMPLETED", _related(id="C")))
    assert bare.merchant_reference == ""


def _raw(body: object) -> WebhookRequest:
    return WebhookRequest("POST", "/", {}, json.dumps(body).encode())


def _bad(resource: object, event_type: str = "PAYMENT.CAPTURE.COMPLETED") -> dict[str, object]:
    return {"id": "WH-1", "event_type": event_type, "resource": resource}


@pytest.mark.parametrize(
    "body",
    [
        {"id": 1, "event_type": "X"},
        {"id": "WH-1", "event_type": ["X"]},
        _bad("x"),
        _bad([]),
        _bad({"supplementary_data": "x"}),
        _bad({"supplementary_data": {"related_ids": []}}),
        _bad({"supplementary_data": {"related_ids": {"order_id": 5}}}),
        _bad({**_related(), "amount": "10.00"}),
        _bad({**_related(), "amount": {"value": 10, "currency_code": "USD"}}),
        _bad({**_related(), "amount": {"value": "ten", "currency_code": "USD"}}),
        _bad({**_related(), "amount": {"value": "1.234", "currency_code": "USD"}}),
        _bad({**_related(), "amount": {"value": "9" * 30, "currency_code": "USD"}}),
        _bad({**_related(), "amount": {"value": "1.00"}}),
        _bad({**_related(), "custom_id": {"a": 1}}),
        _bad({**_related(), "purchase_units": "x"}),
        _bad({**_related(), "status_details": "x"}, "PAYMENT.CAPTURE.DENIED"),
        _bad({"links": "x"}, "PAYMENT.CAPTURE.REFUNDED"),
        _bad({"links": [3]}, "PAYMENT.CAPTURE.REFUNDED"),
        _bad({"links": [{"rel": "up", "href": 3}]}, "PAYMENT.CAPTURE.REFUNDED"),
        _bad({"id": ["O"]}, "CHECKOUT.ORDER.APPROVED"),
    ],
)
def test_bodies_of_the_wrong_shape_are_refused_as_malformed(body: object) -> None:
    with pytest.raises(WebhookVerificationError, match="malformed"):
        PROVIDER.parse_event(_raw(body))


def test_deep_nesting_is_refused_as_malformed() -> None:
    for data in (
        b"[" * 5000 + b"]" * 5000,
        b'{"id": "W", "event_type": "X", "resource": ' + b"[" * 40 + b"]" * 40 + b"}",
    ):
        with pytest.raises(WebhookVerificationError, match="malformed"):
            PROVIDER.parse_event(WebhookRequest("POST", "/", {}, data))
