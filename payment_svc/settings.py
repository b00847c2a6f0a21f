"""Configuration of the payment service, read from the environment once at start.

Provider secrets come only from the environment. The sandbox provider (the default) has dev
defaults shared with ``python -m payment_svc.sandbox``; real providers are enabled only when
their keys are set, and never fall back to a default secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from mppo.platform.config import ConfigError, ServiceConfig
from payment_svc.sandbox.config import DEFAULT_ADDR as SANDBOX_DEFAULT_ADDR
from payment_svc.sandbox.config import DEV_API_KEY, DEV_WEBHOOK_SECRET

PROVIDERS = ("sandbox", "stripe", "razorpay", "paypal")


def load_config() -> ServiceConfig:
    """The payment service's shared settings (docs/conventions.md lists the variables)."""
    return ServiceConfig.from_env("payment")


@dataclass(frozen=True)
class StripeSettings:
    """An API key, a webhook signing secret and (for the sandbox or tests) an API base."""

    api_key: str
    webhook_secret: str
    api_base: str | None


@dataclass(frozen=True)
class PaymentSettings:
    """What the payment service needs beyond the shared ServiceConfig."""

    default_provider: str
    sandbox: StripeSettings
    stripe: StripeSettings | None
    return_url: str
    provider_timeout: float
    retry_attempts: int
    retry_backoff: float
    retry_max_backoff: float
    reconcile_interval: float
    reconcile_max_interval: float
    reconcile_batch: int
    authorization_warning_seconds: float
    #: environment handed to the Razorpay / PayPal adapter factories
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PaymentSettings:
        """Read MPPO_PAYMENT_*, MPPO_SANDBOX_*, MPPO_STRIPE_* (docs/payment.md)."""
        source = dict(os.environ if env is None else env)
        default = source.get("MPPO_PAYMENT_DEFAULT_PROVIDER", "sandbox").strip().lower()
        if default not in PROVIDERS:
            raise ConfigError(
                f"MPPO_PAYMENT_DEFAULT_PROVIDER={default!r} is not one of {PROVIDERS}"
            )
        sandbox_addr = source.get("MPPO_SANDBOX_ADDR", "").strip() or SANDBOX_DEFAULT_ADDR
        stripe_key = source.get("MPPO_STRIPE_API_KEY", "").strip()
        stripe: StripeSettings | None = None
        if stripe_key:
            secret = source.get("MPPO_STRIPE_WEBHOOK_SECRET", "").strip()
            if not secret:
                raise ConfigError("MPPO_STRIPE_WEBHOOK_SECRET is required with MPPO_STRIPE_API_KEY")
            stripe = StripeSettings(
                stripe_key, secret, source.get("MPPO_STRIPE_API_BASE", "").strip() or None
            )
        if default == "stripe" and stripe is None:
            raise ConfigError("the default provider is stripe but MPPO_STRIPE_API_KEY is not set")

        def number(name: str, fallback: float) -> float:
            raw = source.get(name, "").strip()
            try:
                return float(raw) if raw else fallback
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None

        return cls(
            default_provider=default,
            sandbox=StripeSettings(
                source.get("MPPO_SANDBOX_API_KEY", "").strip() or DEV_API_KEY,
                source.get("MPPO_SANDBOX_WEBHOOK_SECRET", "").strip() or DEV_WEBHOOK_SECRET,
                f"http://{sandbox_addr}",
            ),
            stripe=stripe,
            # where the hosted page's "Continue" goes: the client app's page. Unset, the
            # sandbox page simply ends on its result (real Stripe requires it to be set).
            return_url=source.get("MPPO_PAYMENT_RETURN_URL", "").strip(),
            provider_timeout=number("MPPO_PAYMENT_PROVIDER_TIMEOUT", 10.0),
            retry_attempts=int(number("MPPO_PAYMENT_RETRY_ATTEMPTS", 4)),
            retry_backoff=number("MPPO_PAYMENT_RETRY_BACKOFF", 0.2),
            retry_max_backoff=number("MPPO_PAYMENT_RETRY_MAX_BACKOFF", 3.0),
            reconcile_interval=number("MPPO_PAYMENT_RECONCILE_INTERVAL", 30.0),
            reconcile_max_interval=number("MPPO_PAYMENT_RECONCILE_MAX_INTERVAL", 3600.0),
            reconcile_batch=int(number("MPPO_PAYMENT_RECONCILE_BATCH", 50)),
            authorization_warning_seconds=number("MPPO_PAYMENT_AUTH_WARNING_SECONDS", 24 * 3600.0),
            env=source,
        )
