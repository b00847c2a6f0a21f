"""Who gets which notification, and the money outcome of an expiry or cancellation."""

from __future__ import annotations

import pytest

from mppo.platform.config import ConfigError
from notification_svc.config import NotificationConfig
from notification_svc.domain.model import Channel, Contact, Kind, Role, Trigger, plan
from notification_svc.domain.outcome import Outcome, PaymentFacts, outcome_for

CONTACTS = [
    Contact("host", "Hana", "hana@example.com", Role.HOST),
    Contact("m1", "Mo", "mo@example.com", Role.GUEST),
    Contact("m2", "No Mail", "", Role.GUEST),
]
BASE_ENV = {
    "MPPO_NOTIFICATION_DATABASE_URL": "postgresql://u@h/db",
    "MPPO_REDIS_URL": "redis://h",
    "MPPO_NATS_URL": "nats://h",
}


def test_everyone_by_default_email_only_with_an_address_webhook_for_all() -> None:
    planned = plan(Trigger(Kind.GROUP_CONFIRMED, "g"), CONTACTS, webhook_enabled=True)
    emails = {p.member_id for p in planned if p.channel is Channel.EMAIL}
    hooks = {p.member_id for p in planned if p.channel is Channel.WEBHOOK}
    assert emails == {"host", "m1"}
    assert hooks == {"host", "m1", "m2"}


def test_named_recipients_get_their_own_facts_and_unknown_members_nothing() -> None:
    trigger = Trigger(
        Kind.INVITATION,
        "g",
        member_ids=["m1", "m1", "gone"],
        params={"currency": "USD"},
        per_member={"m1": {"payment_link": "L1"}, "gone": {"payment_link": "L9"}},
    )
    planned = plan(trigger, CONTACTS, webhook_enabled=False)
    assert len(planned) == 1
    only = planned[0]
    assert (only.member_id, only.channel) == ("m1", Channel.EMAIL)
    assert only.params == {"currency": "USD", "payment_link": "L1", "role": "GUEST"}


def test_contact_repr_leaks_no_personal_data() -> None:
    text = repr(CONTACTS[0]) + str(CONTACTS[0])
    assert "hana@example.com" not in text
    assert "Hana" not in text


@pytest.mark.parametrize(
    ("facts", "outcome"),
    [
        ([], Outcome.NOTHING_CHARGED),
        ([PaymentFacts("p", voided=True)], Outcome.NOTHING_CHARGED),
        ([PaymentFacts("p", secured=True)], Outcome.HOLD_RELEASE_PENDING),
        ([PaymentFacts("p", secured=True, voided=True)], Outcome.HOLD_RELEASED),
        ([PaymentFacts("p", secured=True, captured=True)], Outcome.REFUND_PENDING),
        ([PaymentFacts("p", captured=True, refunded=True)], Outcome.REFUNDED),
        (
            [PaymentFacts("a", secured=True, voided=True), PaymentFacts("b", refunded=True)],
            Outcome.REFUNDED,
        ),
        (
            [PaymentFacts("a", secured=True), PaymentFacts("b", refunded=True)],
            Outcome.HOLD_RELEASE_PENDING,
        ),
    ],
)
def test_outcome_from_payment_facts(facts: list[PaymentFacts], outcome: Outcome) -> None:
    assert outcome_for(facts) is outcome


def test_config_defaults_and_webhook_needs_a_secret() -> None:
    config = NotificationConfig.from_env("notification", BASE_ENV)
    assert not config.webhook_enabled
    assert config.smtp_addr == ""
    assert config.max_attempts == 6
    with pytest.raises(ConfigError, match="SECRET"):
        NotificationConfig.from_env(
            "notification", {**BASE_ENV, "MPPO_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:1/x"}
        )
    with pytest.raises(ConfigError, match="http"):
        NotificationConfig.from_env(
            "notification",
            {**BASE_ENV, "MPPO_NOTIFY_WEBHOOK_URL": "ftp://x", "MPPO_NOTIFY_WEBHOOK_SECRET": "s"},
        )
