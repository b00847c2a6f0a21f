"""Builds the configured providers, by name: the sandbox always, the others when keyed.

Environment: Stripe ``MPPO_STRIPE_API_KEY`` / ``MPPO_STRIPE_WEBHOOK_SECRET`` (optional
``MPPO_STRIPE_API_BASE``); Razorpay ``MPPO_RAZORPAY_KEY_ID`` / ``MPPO_RAZORPAY_KEY_SECRET`` /
``MPPO_RAZORPAY_WEBHOOK_SECRET`` (optional ``MPPO_RAZORPAY_API_BASE``); PayPal
``MPPO_PAYPAL_CLIENT_ID`` / ``MPPO_PAYPAL_CLIENT_SECRET`` / ``MPPO_PAYPAL_WEBHOOK_ID``
(optional ``MPPO_PAYPAL_API_BASE``).
"""

from __future__ import annotations

from typing import Any

from mppo.platform.backoff import RetryPolicy
from payment_svc.adapters.providers.base import PaymentProvider
from payment_svc.adapters.providers.stripe import StripeProvider
from payment_svc.config import PaymentSettings


def build_providers(settings: PaymentSettings) -> dict[str, PaymentProvider]:
    """Every provider the environment configures, keyed by its webhook/storage name."""
    retry = RetryPolicy(
        attempts=settings.retry_attempts,
        base_delay=settings.retry_backoff,
        max_delay=settings.retry_max_backoff,
    )
    providers: dict[str, PaymentProvider] = {
        "sandbox": StripeProvider(
            name="sandbox",
            api_key=settings.sandbox.api_key,
            webhook_secret=settings.sandbox.webhook_secret,
            api_base=settings.sandbox.api_base,
            success_url=settings.return_url,
            timeout=settings.provider_timeout,
            retry=retry,
        )
    }
    if settings.stripe is not None:
        providers["stripe"] = StripeProvider(
            name="stripe",
            api_key=settings.stripe.api_key,
            webhook_secret=settings.stripe.webhook_secret,
            api_base=settings.stripe.api_base,
            success_url=settings.return_url,
            timeout=settings.provider_timeout,
            retry=retry,
        )
    env = settings.env
    if env.get("MPPO_RAZORPAY_KEY_ID"):
        from payment_svc.adapters.providers.razorpay import RazorpayProvider

        options: dict[str, Any] = {}
        if env.get("MPPO_RAZORPAY_API_BASE"):
            options["api_base"] = env["MPPO_RAZORPAY_API_BASE"]
        providers["razorpay"] = RazorpayProvider(
            key_id=env["MPPO_RAZORPAY_KEY_ID"],
            key_secret=env.get("MPPO_RAZORPAY_KEY_SECRET", ""),
            webhook_secret=env.get("MPPO_RAZORPAY_WEBHOOK_SECRET", ""),
            timeout=settings.provider_timeout,
            retry=retry,
            **options,
        )
    if env.get("MPPO_PAYPAL_CLIENT_ID"):
        from payment_svc.adapters.providers.paypal import PayPalProvider

        options = {}
        if env.get("MPPO_PAYPAL_API_BASE"):
            options["api_base"] = env["MPPO_PAYPAL_API_BASE"]
        providers["paypal"] = PayPalProvider(
            client_id=env["MPPO_PAYPAL_CLIENT_ID"],
            client_secret=env.get("MPPO_PAYPAL_CLIENT_SECRET", ""),
            webhook_id=env.get("MPPO_PAYPAL_WEBHOOK_ID", ""),
            timeout=settings.provider_timeout,
            retry=retry,
            **options,
        )
    return providers


async def close_providers(providers: dict[str, PaymentProvider]) -> None:
    """Close whatever HTTP sessions the adapters hold."""
    for provider in providers.values():
        close = getattr(provider, "close", None)
        if close is not None:
            await close()
