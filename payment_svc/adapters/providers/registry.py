"""Builds the configured providers, by name: each one its settings enable (the sandbox only in
dev/test or when explicitly enabled with its own secrets, the others when keyed).

Environment: Stripe ``MPPO_STRIPE_API_KEY`` / ``MPPO_STRIPE_WEBHOOK_SECRET`` (optional
``MPPO_STRIPE_API_BASE``); Razorpay ``MPPO_RAZORPAY_KEY_ID`` / ``MPPO_RAZORPAY_KEY_SECRET`` /
``MPPO_RAZORPAY_WEBHOOK_SECRET`` (optional ``MPPO_RAZORPAY_API_BASE``); PayPal
``MPPO_PAYPAL_CLIENT_ID`` / ``MPPO_PAYPAL_CLIENT_SECRET`` / ``MPPO_PAYPAL_WEBHOOK_ID``
(optional ``MPPO_PAYPAL_API_BASE``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mppo.platform.backoff import RetryPolicy
from payment_svc.adapters.providers.base import PaymentProvider
from payment_svc.adapters.providers.stripe import StripeProvider
from payment_svc.settings import PaymentSettings

logger = logging.getLogger(__name__)


def build_providers(settings: PaymentSettings) -> dict[str, PaymentProvider]:
    """Every provider the environment configures, keyed by its webhook/storage name."""
    retry = RetryPolicy(
        attempts=settings.retry_attempts,
        base_delay=settings.retry_backoff,
        max_delay=settings.retry_max_backoff,
    )
    providers: dict[str, PaymentProvider] = {}
    if settings.sandbox is not None:
        providers["sandbox"] = StripeProvider(
            name="sandbox",
            api_key=settings.sandbox.api_key,
            webhook_secret=settings.sandbox.webhook_secret,
            api_base=settings.sandbox.api_base,
            success_url=settings.return_url,
            timeout=settings.provider_timeout,
            retry=retry,
        )
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
    if settings.razorpay is not None:
        from payment_svc.adapters.providers.razorpay import RazorpayProvider

        razorpay = settings.razorpay
        options: dict[str, Any] = {}
        if razorpay.api_base:
            options["api_base"] = razorpay.api_base
        providers["razorpay"] = RazorpayProvider(
            key_id=razorpay.key_id,
            key_secret=razorpay.key_secret,
            webhook_secret=razorpay.webhook_secret,
            timeout=settings.provider_timeout,
            retry=retry,
            **options,
        )
    if settings.paypal is not None:
        from payment_svc.adapters.providers.paypal import PayPalProvider

        paypal = settings.paypal
        options = {}
        if paypal.api_base:
            options["api_base"] = paypal.api_base
        providers["paypal"] = PayPalProvider(
            client_id=paypal.client_id,
            client_secret=paypal.client_secret,
            webhook_id=paypal.webhook_id,
            timeout=settings.provider_timeout,
            retry=retry,
            **options,
        )
    return providers


async def close_providers(providers: Mapping[str, PaymentProvider]) -> None:
    """Close whatever HTTP sessions the adapters hold (one failing does not stop the rest)."""
    for name, provider in providers.items():
        close = getattr(provider, "close", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:
            logger.exception("closing the %s provider failed", name)
