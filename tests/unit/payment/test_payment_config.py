"""Payment and sandbox settings.

The sandbox provider and the payment service find the gateway where ``mppo dev up`` put it:
webhooks follow ``MPPO_GATEWAY_ADDR`` (announced to every process), not a fixed
127.0.0.1:8080; an explicit URL still wins. The hosted page's return link is the client app's
page, so there is none unless configured (no link into a JSON API the payer can't use).

Development providers and secrets never outside development: with ``MPPO_ENV=prod`` (the
default) the sandbox provider is not registered unless ``MPPO_SANDBOX_ENABLED=1`` with its own
key and secret, its published ones refuse to start (exit code 2, naming the variable), the
default provider is not the sandbox, and real providers' secrets have no defaults at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping

import pytest

from mppo.platform.config import ConfigError
from mppo.platform.errors import NotFoundError
from payment_svc.adapters.providers.registry import build_providers
from payment_svc.sandbox.config import (
    DEFAULT_WEBHOOK_URL,
    DEV_API_KEY,
    DEV_WEBHOOK_SECRET,
    SandboxConfig,
)
from payment_svc.sandbox.webhooks import sign
from payment_svc.service_layer import commands
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.settings import PaymentSettings
from tests.unit.payment.fakes import Database, FakeGroups, FakeUnitOfWork

DEV = {"MPPO_ENV": "dev"}
STRIPE = {"MPPO_STRIPE_API_KEY": "sk_live_ours", "MPPO_STRIPE_WEBHOOK_SECRET": "whsec_ours"}
OWN_SANDBOX = {
    "MPPO_SANDBOX_ENABLED": "1",
    "MPPO_SANDBOX_API_KEY": "sk_staging_sandbox",
    "MPPO_SANDBOX_WEBHOOK_SECRET": "whsec_staging_sandbox",
}


def prod(**extra: str) -> dict[str, str]:
    """A production environment (MPPO_ENV unset means prod) with real Stripe keys."""
    return {**STRIPE, **extra}


def refused(env: Mapping[str, str]) -> str:
    with pytest.raises(ConfigError) as failure:
        PaymentSettings.from_env(env)
    return str(failure.value)


# gateway address, return URL ------------------------------------------------------------------
def test_sandbox_webhooks_go_to_the_announced_gateway() -> None:
    config = SandboxConfig.from_env({**DEV, "MPPO_GATEWAY_ADDR": "127.0.0.1:41234"})
    assert config.webhook_url == "http://127.0.0.1:41234/payments/webhook/sandbox"


def test_sandbox_webhook_url_defaults_and_overrides() -> None:
    assert SandboxConfig.from_env(DEV).webhook_url == DEFAULT_WEBHOOK_URL
    explicit = SandboxConfig.from_env(
        {**DEV, "MPPO_GATEWAY_ADDR": "127.0.0.1:41234", "MPPO_SANDBOX_WEBHOOK_URL": "http://h:1/x"}
    )
    assert explicit.webhook_url == "http://h:1/x"


def test_payment_return_url_is_the_client_apps_when_configured() -> None:
    assert (
        PaymentSettings.from_env({**DEV, "MPPO_GATEWAY_ADDR": "127.0.0.1:41234"}).return_url == ""
    )
    settings = PaymentSettings.from_env(
        {**DEV, "MPPO_PAYMENT_RETURN_URL": "https://app.example/done"}
    )
    assert settings.return_url == "https://app.example/done"


# development: the sandbox is there and is the default -----------------------------------------
@pytest.mark.parametrize("env", ["dev", "test"])
def test_development_has_the_sandbox_with_its_published_defaults(env: str) -> None:
    settings = PaymentSettings.from_env({"MPPO_ENV": env})
    assert settings.default_provider == "sandbox"
    assert settings.sandbox is not None
    assert (settings.sandbox.api_key, settings.sandbox.webhook_secret) == (
        DEV_API_KEY,
        DEV_WEBHOOK_SECRET,
    )
    assert set(build_providers(settings)) == {"sandbox"}


# production: no sandbox unless explicitly enabled with its own secrets -------------------------
def test_production_registers_no_sandbox_and_defaults_to_stripe() -> None:
    settings = PaymentSettings.from_env(prod())
    assert settings.sandbox is None
    assert settings.default_provider == "stripe"
    assert set(build_providers(settings)) == {"stripe"}


async def test_production_refuses_a_sandbox_webhook_signed_with_the_published_secret() -> None:
    """The attack: anyone can sign with the secret in docs/payment.md. In prod there is no
    sandbox provider to accept it."""
    settings = PaymentSettings.from_env(prod())
    handlers = PaymentHandlers(build_providers(settings), settings, FakeGroups())
    body = json.dumps(
        {
            "id": "evt_forged",
            "type": "payment_intent.amount_capturable_updated",
            "data": {"object": {"object": "payment_intent", "id": "pi_x", "amount": 100}},
        }
    ).encode()
    forged = commands.HandleWebhook(
        provider="sandbox",
        body=body,
        headers={"stripe-signature": sign(DEV_WEBHOOK_SECRET, body)},
    )
    db = Database()
    with pytest.raises(NotFoundError):
        await handlers.handle_webhook(forged, FakeUnitOfWork(db))
    assert db.webhooks == {}


def test_production_without_any_provider_refuses_to_start() -> None:
    assert "MPPO_STRIPE_API_KEY" in refused({})
    assert "MPPO_STRIPE_API_KEY" in refused({"MPPO_ENV": "prod"})


def test_production_default_provider_is_never_the_sandbox_by_itself() -> None:
    message = refused(prod(MPPO_PAYMENT_DEFAULT_PROVIDER="sandbox"))
    assert "MPPO_SANDBOX_ENABLED" in message
    assert "MPPO_PAYMENT_DEFAULT_PROVIDER" in message
    enabled = PaymentSettings.from_env(prod(**OWN_SANDBOX))
    assert enabled.default_provider == "stripe"  # enabled, but not the default unless asked
    chosen = PaymentSettings.from_env(prod(**OWN_SANDBOX, MPPO_PAYMENT_DEFAULT_PROVIDER="sandbox"))
    assert chosen.default_provider == "sandbox"


def test_production_sandbox_enabled_with_its_own_secrets() -> None:
    settings = PaymentSettings.from_env(prod(**OWN_SANDBOX))
    assert settings.sandbox is not None
    assert settings.sandbox.api_key == "sk_staging_sandbox"
    assert settings.sandbox.webhook_secret == "whsec_staging_sandbox"
    assert set(build_providers(settings)) == {"sandbox", "stripe"}


@pytest.mark.parametrize(
    ("variable", "published"),
    [
        ("MPPO_SANDBOX_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
        ("MPPO_SANDBOX_API_KEY", DEV_API_KEY),
    ],
)
def test_production_sandbox_refuses_published_or_missing_secrets(
    variable: str, published: str
) -> None:
    assert variable in refused(prod(**{**OWN_SANDBOX, variable: published}))
    assert variable in refused(prod(**{**OWN_SANDBOX, variable: ""}))
    missing = {k: v for k, v in OWN_SANDBOX.items() if k != variable}
    assert variable in refused(prod(**missing))


def test_real_providers_have_no_default_secrets() -> None:
    assert "MPPO_STRIPE_WEBHOOK_SECRET" in refused({**DEV, "MPPO_STRIPE_API_KEY": "sk_x"})
    assert "MPPO_RAZORPAY_WEBHOOK_SECRET" in refused(
        {**DEV, "MPPO_RAZORPAY_KEY_ID": "rzp", "MPPO_RAZORPAY_KEY_SECRET": "s"}
    )
    assert "MPPO_RAZORPAY_KEY_SECRET" in refused(
        {**DEV, "MPPO_RAZORPAY_KEY_ID": "rzp", "MPPO_RAZORPAY_WEBHOOK_SECRET": "w"}
    )
    assert "MPPO_PAYPAL_WEBHOOK_ID" in refused(
        {**DEV, "MPPO_PAYPAL_CLIENT_ID": "c", "MPPO_PAYPAL_CLIENT_SECRET": "s"}
    )
    # nor may they borrow the sandbox's published ones in prod
    assert "MPPO_STRIPE_WEBHOOK_SECRET" in refused(
        {**STRIPE, "MPPO_STRIPE_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET}
    )


def test_an_unknown_environment_is_refused() -> None:
    assert "MPPO_ENV" in refused({**STRIPE, "MPPO_ENV": "staging"})


def test_the_sandbox_process_settings_refuse_published_secrets_in_prod() -> None:
    with pytest.raises(ConfigError, match="MPPO_SANDBOX_API_KEY"):
        SandboxConfig.from_env({})
    with pytest.raises(ConfigError, match="MPPO_SANDBOX_WEBHOOK_SECRET"):
        SandboxConfig.from_env(
            {"MPPO_SANDBOX_API_KEY": "sk_own", "MPPO_SANDBOX_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET}
        )
    own = SandboxConfig.from_env(
        {"MPPO_SANDBOX_API_KEY": "sk_own", "MPPO_SANDBOX_WEBHOOK_SECRET": "whsec_own"}
    )
    assert (own.api_key, own.webhook_secret) == ("sk_own", "whsec_own")


# the processes stop at start-up with exit code 2 -----------------------------------------------
def _run(module: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MPPO_")}
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_payment_service_with_the_published_sandbox_secret_exits_2_naming_it() -> None:
    env = {
        # everything else a production start needs, so only the secret can stop it
        "MPPO_PAYMENT_DATABASE_URL": "postgresql://mppo@127.0.0.1:9/payment_db",
        "MPPO_REDIS_URL": "redis://127.0.0.1:9/0",
        "MPPO_NATS_URL": "nats://127.0.0.1:9",
        "MPPO_PAYMENT_ADDR": "127.0.0.1:0",
        **STRIPE,
        "MPPO_SANDBOX_ENABLED": "1",
        "MPPO_SANDBOX_API_KEY": "sk_staging_sandbox",
        "MPPO_SANDBOX_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
    }
    done = _run("payment_svc", env)
    assert done.returncode == 2, done.stderr
    assert "MPPO_SANDBOX_WEBHOOK_SECRET" in done.stderr


def test_sandbox_process_with_its_published_defaults_exits_2_in_prod() -> None:
    done = _run("payment_svc.sandbox", {"MPPO_SANDBOX_ADDR": "127.0.0.1:0"})
    assert done.returncode == 2, done.stderr
    assert "MPPO_SANDBOX_API_KEY" in done.stderr
