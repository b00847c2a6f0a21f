"""Rendering of every kind of notification, money formatting and the webhook body."""

from __future__ import annotations

import json

import pytest

from notification_svc.domain.messages import format_money, render_email, webhook_body
from notification_svc.domain.model import Kind
from notification_svc.domain.outcome import Outcome

LINK = "https://pay.example/checkout/cs_123"


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1050, "USD", "10.50 USD"),
        (5, "EUR", "0.05 EUR"),
        (1000, "JPY", "1000 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (-250, "inr", "-2.50 INR"),
    ],
)
def test_money_uses_the_iso_4217_exponent(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


def test_invitation_carries_share_total_deadline_and_payment_link() -> None:
    mail = render_email(
        Kind.INVITATION,
        {
            "group_id": "g1",
            "share_minor": "2500",
            "total_minor": "10000",
            "currency": "USD",
            "deadline": "2030-01-02T03:04:05.000000Z",
            "payment_link": LINK,
        },
        "Alice",
    )
    assert "25.00 USD" in mail.subject
    assert mail.body.startswith("Hi Alice,")
    assert LINK in mail.body
    assert "100.00 USD" in mail.body
    assert "2030-01-02 03:04 UTC" in mail.body


def test_reminder_and_host_fallback_carry_their_links() -> None:
    reminder = render_email(Kind.REMINDER, {"payment_link": LINK, "deadline": ""}, "Bob")
    assert LINK in reminder.body
    assert "Reminder" in reminder.subject
    fallback = render_email(
        Kind.HOST_FALLBACK,
        {"payment_link": LINK + "x", "amount_minor": "700", "currency": "EUR"},
        "Host",
    )
    assert LINK + "x" in fallback.body
    assert "7.00 EUR" in fallback.subject


def test_payment_received_and_confirmed() -> None:
    paid = render_email(
        Kind.PAYMENT_RECEIVED,
        {"amount_minor": "1999", "currency": "USD", "remaining_members": "2"},
        "",
    )
    assert paid.body.startswith("Hello,")
    assert "19.99 USD" in paid.subject
    assert "Members still to pay: 2." in paid.body
    confirmed = render_email(Kind.GROUP_CONFIRMED, {"order_id": "ord-9"}, "C")
    assert "confirmed" in confirmed.subject
    assert "ord-9" in confirmed.body


HELD = "It is held, not charged, until the order is confirmed."
CHARGED = "It is charged now and refunded if the order is not confirmed."


@pytest.mark.parametrize(
    ("captured", "says", "never"),
    [
        ("false", HELD, CHARGED),  # a hold (card authorization)
        (None, HELD, CHARGED),  # a notification stored before the flag existed
        ("true", CHARGED, HELD),  # a provider that cannot hold money (Razorpay payment link)
    ],
)
def test_payment_received_says_whether_the_money_is_held_or_charged(
    captured: str | None, says: str, never: str
) -> None:
    params = {"amount_minor": "1999", "currency": "USD", "remaining_members": "0"}
    if captured is not None:
        params["captured"] = captured
    mail = render_email(Kind.PAYMENT_RECEIVED, params, "Ann")
    assert f"We received your payment of 19.99 USD. {says}" in mail.body
    assert never not in mail.body


@pytest.mark.parametrize(
    ("outcome", "sentence"),
    [
        (Outcome.NOTHING_CHARGED, "You were not charged."),
        (Outcome.HOLD_RELEASED, "The hold on your payment of 12.00 USD has been released."),
        (Outcome.REFUNDED, "Your payment of 12.00 USD has been refunded."),
        (Outcome.HOLD_RELEASE_PENDING, "is being released"),
        (Outcome.REFUND_PENDING, "is being refunded"),
    ],
)
@pytest.mark.parametrize("kind", [Kind.GROUP_EXPIRED, Kind.GROUP_CANCELLED])
def test_expired_and_cancelled_state_what_happened_to_the_money(
    kind: Kind, outcome: Outcome, sentence: str
) -> None:
    mail = render_email(
        kind,
        {
            "outcome": outcome.value,
            "settled_minor": "1200",
            "currency": "USD",
            "reason": "deadline passed",
        },
        "D",
    )
    assert sentence in mail.body
    assert ("expired" if kind is Kind.GROUP_EXPIRED else "cancelled") in mail.subject
    assert "Reason: deadline passed." in mail.body


def test_webhook_body_is_compact_json_with_ids_and_facts() -> None:
    body = webhook_body(
        notification_id="n1",
        kind=Kind.INVITATION,
        group_id="g1",
        member_id="m1",
        event_id="e1",
        event_type="group.opened",
        created_at="2030-01-01T00:00:00.000000Z",
        params={"payment_link": LINK, "share_minor": "5"},
    )
    doc = json.loads(body)
    assert doc["type"] == "notification.invitation"
    assert doc["data"] == {"payment_link": LINK, "share_minor": "5"}
    assert (doc["id"], doc["group_id"], doc["member_id"], doc["event_id"]) == (
        "n1",
        "g1",
        "m1",
        "e1",
    )
    assert b" " not in body


def test_link_e_mails_lead_to_the_group_page_and_still_name_the_payment_page() -> None:
    page = "https://mppo.example/g/g1#tok"
    params = {"payment_link": LINK, "deadline": "", "amount_minor": "700", "currency": "EUR"}
    for kind in (Kind.INVITATION, Kind.REMINDER, Kind.HOST_FALLBACK):
        body = render_email(kind, params, "Ann", page_link=page).body
        assert page in body
        assert body.index(page) < body.index(LINK)  # the page first, the provider's page after
    without = render_email(Kind.INVITATION, params, "Ann").body
    assert "group page" not in without
    assert LINK in without
