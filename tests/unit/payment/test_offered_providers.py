"""The providers members may choose (MPPO_PAYMENT_PROVIDERS, read by the group and payment
services alike) must be ones the payment service has keys for: a provider offered but not
configured stops the payment service at start instead of failing each member who picks it."""

from __future__ import annotations

import pytest

from mppo.platform.config import ConfigError
from payment_svc.settings import PaymentSettings

PAYPAL = {
    "MPPO_PAYPAL_CLIENT_ID": "client",
    "MPPO_PAYPAL_CLIENT_SECRET": "secret",
    "MPPO_PAYPAL_WEBHOOK_ID": "WH-1",
}


def test_every_offered_provider_must_be_configured() -> None:
    with pytest.raises(ConfigError, match="razorpay"):
        PaymentSettings.from_env(
            {"MPPO_ENV": "dev", "MPPO_PAYMENT_PROVIDERS": "sandbox,paypal,razorpay", **PAYPAL}
        )
    settings = PaymentSettings.from_env(
        {"MPPO_ENV": "dev", "MPPO_PAYMENT_PROVIDERS": "sandbox,paypal", **PAYPAL}
    )
    assert settings.paypal is not None
    assert settings.default_provider == "sandbox"


def test_without_a_list_the_keyed_providers_are_offered() -> None:
    settings = PaymentSettings.from_env({"MPPO_ENV": "dev", **PAYPAL})
    assert settings.paypal is not None
    assert settings.razorpay is None
