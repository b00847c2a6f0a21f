"""Per-provider hold windows (issue 14, part 1): the configuration and its defaults, and the
lapse time a hold gets when its provider reports none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mppo.platform.config import ConfigError
from mppo.platform.providers import ProviderChoice
from payment_svc.domain.model import Observation, Payment, PaymentStatus


def test_the_defaults_and_overrides_of_the_hold_windows() -> None:
    choice = ProviderChoice.from_env({"MPPO_ENV": "dev"})
    assert choice.default == "sandbox"
    assert choice.configured == ("sandbox",)
    assert choice.window("stripe") == timedelta(days=7)
    assert choice.window("razorpay") == timedelta(days=3)
    assert choice.window("paypal") == timedelta(days=3)
    assert choice.shortest_window(["", "paypal"]) == ("paypal", timedelta(days=3))
    tuned = ProviderChoice.from_env(
        {
            "MPPO_ENV": "dev",
            "MPPO_PAYMENT_PROVIDERS": "sandbox,paypal,razorpay",
            "MPPO_HOLD_WINDOW_STRIPE_SECONDS": str(4 * 86400),
            "MPPO_RAZORPAY_KEY_ID": "rzp",
        }
    )
    assert tuned.configured == ("sandbox", "paypal", "razorpay")
    assert tuned.window("stripe") == timedelta(days=4)
    assert tuned.is_configured("paypal")
    assert not tuned.is_configured("stripe")
    with pytest.raises(ConfigError):
        ProviderChoice.from_env({"MPPO_PAYMENT_PROVIDERS": "sandbox,venmo"})


def test_a_hold_without_a_provider_lapse_time_lapses_after_the_window() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    payment = Payment("p1", "g1", "m1", 1, 500, "USD", "razorpay")
    payment.observe(
        Observation(status=PaymentStatus.AUTHORIZED, amount_authorized_minor=500),
        reason="webhook",
        actor="provider:razorpay",
        hold_until=now + timedelta(days=3),
    )
    assert payment.authorization_expires_at == now + timedelta(days=3)
    # the provider's own lapse time (Stripe's capture_before) wins
    stripe = Payment("p2", "g1", "m2", 1, 500, "USD", "stripe")
    stripe.observe(
        Observation(
            status=PaymentStatus.AUTHORIZED,
            amount_authorized_minor=500,
            authorization_expires_at=now + timedelta(days=4),
        ),
        reason="webhook",
        actor="provider:stripe",
        hold_until=now + timedelta(days=7),
    )
    assert stripe.authorization_expires_at == now + timedelta(days=4)
