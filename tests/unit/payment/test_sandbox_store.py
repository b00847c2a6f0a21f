"""The sandbox's form decoding, ledger and journal (state survives a restart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from payment_svc.sandbox.forms import decode
from payment_svc.sandbox.page import format_amount
from payment_svc.sandbox.store import CARD_CAPTURE_FAILS, SandboxError, Store


def test_decode_nested_form() -> None:
    decoded = decode(
        [
            ("mode", "payment"),
            ("line_items[0][price_data][unit_amount]", "100"),
            ("line_items[0][quantity]", "1"),
            ("metadata[payment_id]", "p"),
            ("expand[]", "latest_charge"),
        ]
    )
    assert decoded == {
        "mode": "payment",
        "line_items": [{"price_data": {"unit_amount": "100"}, "quantity": "1"}],
        "metadata": {"payment_id": "p"},
        "expand": ["latest_charge"],
    }


def test_format_amount_uses_iso_exponents() -> None:
    assert format_amount(1050, "usd") == "10.50 USD"
    assert format_amount(1050, "jpy") == "1050 JPY"
    assert format_amount(1050, "kwd") == "1.050 KWD"


def session_params(amount: int = 700) -> dict[str, object]:
    return {
        "mode": "payment",
        "line_items": [
            {"quantity": "1", "price_data": {"currency": "usd", "unit_amount": str(amount)}}
        ],
        "payment_intent_data": {"capture_method": "manual", "metadata": {"group_id": "g"}},
    }


def test_ledger_and_journal_survive_restart(tmp_path: Path) -> None:
    journal = tmp_path / "state.jsonl"
    store = Store(journal, "http://sandbox", 7)
    session = store.create_session(session_params())
    store.pay(session["id"], "4242424242424242", "pay")
    intent_id = str(session["payment_intent"])
    store.capture(intent_id, 500)
    store.refund(intent_id, 200, "")
    store.close()
    again = Store(journal, "http://sandbox", 7)
    view = again.ledger_view(group_id="g")
    assert view["totals"] == {"hold": 700, "capture": 500, "release": 200, "refund": 200}
    assert view["held"] == 0
    assert view["kept"] == 300
    assert again.intent(intent_id)["status"] == "succeeded"
    assert [e["type"] for e in again.events.values()] == [
        "checkout.session.completed",
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "charge.refunded",
    ]
    with pytest.raises(SandboxError):
        again.refund(intent_id, 301, "")


def test_capture_declined_card_keeps_the_hold_until_cancelled() -> None:
    store = Store(None, "http://sandbox", 7)
    session = store.create_session(session_params())
    store.pay(session["id"], CARD_CAPTURE_FAILS, "pay")
    intent_id = str(session["payment_intent"])
    with pytest.raises(SandboxError) as declined:
        store.capture(intent_id, None)
    assert declined.value.status == 402
    store.cancel(intent_id, "")
    assert store.ledger_view(payment_intent=intent_id)["held"] == 0
    with pytest.raises(SandboxError):
        store.pay(session["id"], "4242424242424242", "pay")
