"""Settings of the payment service, read from the environment once at start (through the one
typed reader, :class:`mppo.platform.settings.Env`).

Provider secrets come only from the environment. The sandbox provider (the default) has dev
defaults shared with ``python -m payment_svc.sandbox``; real providers are enabled only when
their keys are set, and never fall back to a default secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mppo.platform.config import ConfigError, ServiceConfig, service_addr
from mppo.platform.settings import Env
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
class RazorpaySettings:
    """``MPPO_RAZORPAY_KEY_ID`` / ``_KEY_SECRET`` / ``_WEBHOOK_SECRET`` (``_API_BASE``)."""

    key_id: str
    key_secret: str
    webhook_secret: str
    api_base: str | None


@dataclass(frozen=True)
class PayPalSettings:
    """``MPPO_PAYPAL_CLIENT_ID`` / ``_CLIENT_SECRET`` / ``_WEBHOOK_ID`` (``_API_BASE``)."""

    client_id: str
    client_secret: str
    webhook_id: str
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
    razorpay: RazorpaySettings | None = None
    paypal: PayPalSettings | None = None
    #: the group service, asked who may see a group's payments
    group_addr: str = ""

    @classmethod
    def from_env(cls, source: Mapping[str, str] | None = None) -> PaymentSettings:
        """Read MPPO_PAYMENT_*, MPPO_SANDBOX_*, MPPO_STRIPE_*, MPPO_RAZORPAY_*, MPPO_PAYPAL_*
        (docs/payment.md)."""
        values = os.environ if source is None else source
        env = Env(values)
        default = env.choice("MPPO_PAYMENT_DEFAULT_PROVIDER", PROVIDERS, "sandbox")
        sandbox_addr = env.addr("MPPO_SANDBOX_ADDR", SANDBOX_DEFAULT_ADDR)
        stripe: StripeSettings | None = None
        if env.text("MPPO_STRIPE_API_KEY"):
            if not env.text("MPPO_STRIPE_WEBHOOK_SECRET"):
                raise ConfigError("MPPO_STRIPE_WEBHOOK_SECRET is required with MPPO_STRIPE_API_KEY")
            stripe = StripeSettings(
                env.text("MPPO_STRIPE_API_KEY"),
                env.text("MPPO_STRIPE_WEBHOOK_SECRET"),
                env.url("MPPO_STRIPE_API_BASE") or None,
            )
        if default == "stripe" and stripe is None:
            raise ConfigError("the default provider is stripe but MPPO_STRIPE_API_KEY is not set")
        razorpay: RazorpaySettings | None = None
        if env.text("MPPO_RAZORPAY_KEY_ID"):
            razorpay = RazorpaySettings(
                key_id=env.text("MPPO_RAZORPAY_KEY_ID"),
                key_secret=env.text("MPPO_RAZORPAY_KEY_SECRET"),
                webhook_secret=env.text("MPPO_RAZORPAY_WEBHOOK_SECRET"),
                api_base=env.url("MPPO_RAZORPAY_API_BASE") or None,
            )
        paypal: PayPalSettings | None = None
        if env.text("MPPO_PAYPAL_CLIENT_ID"):
            paypal = PayPalSettings(
                client_id=env.text("MPPO_PAYPAL_CLIENT_ID"),
                client_secret=env.text("MPPO_PAYPAL_CLIENT_SECRET"),
                webhook_id=env.text("MPPO_PAYPAL_WEBHOOK_ID"),
                api_base=env.url("MPPO_PAYPAL_API_BASE") or None,
            )
        return cls(
            default_provider=default,
            sandbox=StripeSettings(
                env.text("MPPO_SANDBOX_API_KEY", DEV_API_KEY),
                env.text("MPPO_SANDBOX_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
                f"http://{sandbox_addr}",
            ),
            stripe=stripe,
            # where the hosted page's "Continue" goes: the client app's page. Unset, the
            # sandbox page simply ends on its result (real Stripe requires it to be set).
            return_url=env.url("MPPO_PAYMENT_RETURN_URL"),
            provider_timeout=env.number("MPPO_PAYMENT_PROVIDER_TIMEOUT", 10.0, minimum=0.01),
            retry_attempts=env.integer("MPPO_PAYMENT_RETRY_ATTEMPTS", 4, minimum=1),
            retry_backoff=env.number("MPPO_PAYMENT_RETRY_BACKOFF", 0.2),
            retry_max_backoff=env.number("MPPO_PAYMENT_RETRY_MAX_BACKOFF", 3.0),
            reconcile_interval=env.number("MPPO_PAYMENT_RECONCILE_INTERVAL", 30.0, minimum=0.01),
            reconcile_max_interval=env.number(
                "MPPO_PAYMENT_RECONCILE_MAX_INTERVAL", 3600.0, minimum=0.01
            ),
            reconcile_batch=env.integer("MPPO_PAYMENT_RECONCILE_BATCH", 50, minimum=1),
            authorization_warning_seconds=env.number(
                "MPPO_PAYMENT_AUTH_WARNING_SECONDS", 24 * 3600.0
            ),
            razorpay=razorpay,
            paypal=paypal,
            group_addr=service_addr(values, "group"),
        )
