"""Settings of the payment service, read from the environment once at start (through the one
typed reader, :class:`mppo.platform.settings.Env`).

Provider secrets come only from the environment. Real providers are enabled only when their
keys are set, and never fall back to a default secret.

The sandbox provider is a development tool. With ``MPPO_ENV=dev|test`` it is always there, is
the default provider and may use the development key and secret it shares with ``python -m
payment_svc.sandbox`` (published in docs/payment.md). Outside dev/test (``prod``, the default)
it is not registered at all unless ``MPPO_SANDBOX_ENABLED=1``, and then only with its own
``MPPO_SANDBOX_API_KEY`` and ``MPPO_SANDBOX_WEBHOOK_SECRET`` (the published ones refuse to
start, :func:`mppo.platform.environment.secret`); the default provider is then ``stripe``
unless ``MPPO_PAYMENT_DEFAULT_PROVIDER`` names another configured one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from mppo.platform.config import ConfigError, ServiceConfig, service_addr
from mppo.platform.environment import ENV_VAR, environment, is_development, secret
from mppo.platform.providers import DEFAULT_HOLD_WINDOWS, ProviderChoice
from mppo.platform.settings import Env
from payment_svc.sandbox.config import DEFAULT_ADDR as SANDBOX_DEFAULT_ADDR
from payment_svc.sandbox.config import DEV_API_KEY, DEV_WEBHOOK_SECRET

PROVIDERS = ("sandbox", "stripe", "razorpay", "paypal")


SANDBOX_ENABLED_VAR = "MPPO_SANDBOX_ENABLED"


def load_config() -> ServiceConfig:
    """The payment service's shared settings (docs/conventions.md lists the variables), once
    its own settings are known to be acceptable: a development secret outside dev/test stops
    the process here, before anything starts (exit code 2, naming the variable)."""
    PaymentSettings.from_env()
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
    #: None: the sandbox provider is not registered (prod without MPPO_SANDBOX_ENABLED=1)
    sandbox: StripeSettings | None
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
    #: how long each provider holds an authorization (mppo.platform.providers)
    hold_windows: Mapping[str, timedelta] = field(
        default_factory=lambda: dict(DEFAULT_HOLD_WINDOWS)
    )

    @classmethod
    def from_env(cls, source: Mapping[str, str] | None = None) -> PaymentSettings:
        """Read MPPO_PAYMENT_*, MPPO_SANDBOX_*, MPPO_STRIPE_*, MPPO_RAZORPAY_*, MPPO_PAYPAL_*
        (docs/payment.md)."""
        values = os.environ if source is None else source
        env = Env(values)
        development = is_development(values)
        sandbox = _sandbox(env, values, development)
        stripe = _stripe(env, values, development)
        razorpay = _razorpay(env)
        paypal = _paypal(env)
        default = env.choice(
            "MPPO_PAYMENT_DEFAULT_PROVIDER", PROVIDERS, "sandbox" if development else "stripe"
        )
        configured = {
            "sandbox": sandbox is not None,
            "stripe": stripe is not None,
            "razorpay": razorpay is not None,
            "paypal": paypal is not None,
        }
        if not configured[default]:
            how = {
                "sandbox": f"{SANDBOX_ENABLED_VAR}=1 (it is off when {ENV_VAR}="
                f"{environment(values)})",
                "stripe": "MPPO_STRIPE_API_KEY",
                "razorpay": "MPPO_RAZORPAY_KEY_ID",
                "paypal": "MPPO_PAYPAL_CLIENT_ID",
            }[default]
            raise ConfigError(
                f"MPPO_PAYMENT_DEFAULT_PROVIDER is {default}, which is not configured: set "
                f"{how}, or choose a configured provider"
            )
        offered = ProviderChoice.from_env(values)
        missing = [name for name in offered.configured if not configured[name]]
        if missing:
            raise ConfigError(
                f"MPPO_PAYMENT_PROVIDERS offers {', '.join(missing)} to members, but the payment "
                "service has no keys for it: set them, or offer only configured providers"
            )
        return cls(
            default_provider=default,
            sandbox=sandbox,
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
            hold_windows=offered.hold_windows,
        )


def _sandbox(env: Env, values: Mapping[str, str], development: bool) -> StripeSettings | None:
    """The sandbox provider: always in dev/test (development key and secret allowed); outside
    them only when explicitly enabled, with its own key and secret."""
    if not development and not env.switch(SANDBOX_ENABLED_VAR, False):
        return None
    addr = env.addr("MPPO_SANDBOX_ADDR", SANDBOX_DEFAULT_ADDR)
    return StripeSettings(
        secret(values, "MPPO_SANDBOX_API_KEY", DEV_API_KEY),
        secret(values, "MPPO_SANDBOX_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
        f"http://{addr}",
    )


def _not_published(values: Mapping[str, str], name: str, published: str, development: bool) -> str:
    """A real provider's secret: required, and never the sandbox's published one in prod."""
    value = values.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required with the provider's other keys")
    if value == published and not development:
        raise ConfigError(
            f"{name} is the sandbox's published development value; set the provider's own "
            f"(refused because {ENV_VAR}={environment(values)})"
        )
    return value


def _stripe(env: Env, values: Mapping[str, str], development: bool) -> StripeSettings | None:
    if not env.text("MPPO_STRIPE_API_KEY"):
        return None
    return StripeSettings(
        _not_published(values, "MPPO_STRIPE_API_KEY", DEV_API_KEY, development),
        _not_published(values, "MPPO_STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET, development),
        env.url("MPPO_STRIPE_API_BASE") or None,
    )


def _razorpay(env: Env) -> RazorpaySettings | None:
    if not env.text("MPPO_RAZORPAY_KEY_ID"):
        return None
    return RazorpaySettings(
        key_id=env.text("MPPO_RAZORPAY_KEY_ID"),
        key_secret=env.required("MPPO_RAZORPAY_KEY_SECRET"),
        webhook_secret=env.required("MPPO_RAZORPAY_WEBHOOK_SECRET"),
        api_base=env.url("MPPO_RAZORPAY_API_BASE") or None,
    )


def _paypal(env: Env) -> PayPalSettings | None:
    if not env.text("MPPO_PAYPAL_CLIENT_ID"):
        return None
    return PayPalSettings(
        client_id=env.text("MPPO_PAYPAL_CLIENT_ID"),
        client_secret=env.required("MPPO_PAYPAL_CLIENT_SECRET"),
        webhook_id=env.required("MPPO_PAYPAL_WEBHOOK_ID"),
        api_base=env.url("MPPO_PAYPAL_API_BASE") or None,
    )
