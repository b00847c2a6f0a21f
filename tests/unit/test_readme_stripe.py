"""The README's "Going live on Stripe test mode" matches the code: the events it says to subscribe
to (its list and its ``stripe listen --events``) are exactly the Stripe events the adapter acts
on, found by feeding the adapter each candidate event; the webhook path is the gateway's binding
for the Stripe provider; every variable it names is one the code reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from payment_svc.adapters.providers.base import WebhookRequest
from payment_svc.adapters.providers.stripe import StripeProvider

REPO = Path(__file__).resolve().parents[2]
EVENT_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")

#: Stripe event types a payments integration commonly meets (besides those the adapter's
#: source and the README name), so an event the adapter starts handling cannot go unlisted
OTHER_STRIPE_EVENTS = {
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.partially_funded",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "charge.succeeded",
    "charge.captured",
    "charge.failed",
    "charge.expired",
    "charge.updated",
    "charge.refund.updated",
    "charge.dispute.created",
    "refund.created",
    "refund.updated",
}


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def stripe_event(event_type: str) -> dict[str, Any]:
    """A well-formed event of ``event_type`` whose object is of the kind its name says."""
    kind = event_type.rsplit(".", 1)[0]
    obj: dict[str, Any] = {
        "id": "cs_test_1" if kind == "checkout.session" else "pi_test_1",
        "object": kind,
        "metadata": {"payment_id": "7f1c8f6e-7a39-4d53-9a8f-0d4f1d0b6c11"},
        "amount": 1050,
        "amount_total": 1050,
        "amount_capturable": 1050,
        "amount_received": 1050,
        "amount_captured": 1050,
        "amount_refunded": 1050,
        "payment_status": "unpaid",
        "status": "requires_capture",
    }
    if kind in ("checkout.session", "charge", "charge.refund", "charge.dispute", "refund"):
        obj["payment_intent"] = "pi_test_1"
    if kind in ("charge", "charge.refund", "charge.dispute", "refund"):
        obj["id"] = "ch_test_1"
    return {
        "id": "evt_" + event_type.replace(".", "_"),
        "object": "event",
        "type": event_type,
        "created": 1_790_000_000,
        "data": {"object": obj},
    }


def handled_by(adapter: StripeProvider, candidates: set[str]) -> set[str]:
    """The candidates whose event the adapter turns into a payment status."""
    handled = set()
    for event_type in sorted(candidates):
        body = json.dumps(stripe_event(event_type)).encode()
        event = adapter.parse_event(WebhookRequest("POST", "/", {}, body))
        assert event.event_type == event_type
        if event.status is not None:
            handled.add(event_type)
    return handled


def listed_events() -> list[str]:
    """The README's bulleted list after its stripe-events marker."""
    section = readme_section("Going live on Stripe test mode")
    after = section[section.index("<!-- stripe-events:") :]
    return re.findall(r"^- `([a-z_.]+)`", after, re.MULTILINE)


def listen_events() -> list[str]:
    """The ``--events`` of the README's ``stripe listen`` command."""
    section = readme_section("Going live on Stripe test mode")
    found = re.search(r"--events ([a-z_.,]+)", section)
    assert found is not None, "no `stripe listen --events` in the section"
    return found.group(1).split(",")


async def test_the_readme_lists_exactly_the_events_the_adapter_handles() -> None:
    source = (REPO / "payment_svc/adapters/providers/stripe.py").read_text()
    literals = {s for s in re.findall(r'"([a-z_.]+)"', source) if EVENT_NAME.match(s)}
    listed = listed_events()
    candidates = literals | set(listed) | set(listen_events()) | OTHER_STRIPE_EVENTS
    # keep to event types: the object kinds of Stripe's API that carry events
    candidates = {
        c for c in candidates if c.split(".")[0] in ("payment_intent", "checkout", "charge")
    }
    adapter = StripeProvider(name="stripe", api_key="sk_test_unit", webhook_secret="whsec_unit")
    try:
        handled = handled_by(adapter, candidates)
    finally:
        await adapter.close()
    assert len(handled) >= 5, handled
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == handled
    assert sorted(listen_events()) == sorted(handled)


def test_the_webhook_path_is_the_gateway_binding_for_stripe() -> None:
    proto = (REPO / "proto/mppo/payment/v1/payment_service.proto").read_text()
    assert 'post: "/payments/webhook/{provider}"' in proto
    section = readme_section("Going live on Stripe test mode")
    assert "https://<your gateway>/payments/webhook/stripe" in section
    assert "stripe listen --forward-to localhost:8080/payments/webhook/stripe" in section


def test_every_variable_named_is_read_by_the_code() -> None:
    section = readme_section("Going live on Stripe test mode")
    named = set(re.findall(r"\bMPPO_[A-Z_]+[A-Z]\b", section))
    assert {
        "MPPO_ENV",
        "MPPO_STRIPE_API_KEY",
        "MPPO_STRIPE_WEBHOOK_SECRET",
        "MPPO_SANDBOX_ENABLED",
    } <= named
    code = "".join(
        (REPO / path).read_text()
        for path in (
            "payment_svc/settings.py",
            "mppo/platform/providers.py",
            "mppo/platform/environment.py",
        )
    )
    unknown = {name for name in named if f'"{name}"' not in code}
    assert unknown == set(), f"the README names variables the code does not read: {unknown}"
