"""The sandbox provider and the payment service find the gateway where ``mppo dev up`` put it:
webhooks follow ``MPPO_GATEWAY_ADDR`` (announced to every process), not a fixed
127.0.0.1:8080; an explicit URL still wins. The hosted page's return link is the client app's
page, so there is none unless configured (no link into a JSON API the payer can't use)."""

from __future__ import annotations

from payment_svc.sandbox.config import DEFAULT_WEBHOOK_URL, SandboxConfig
from payment_svc.settings import PaymentSettings


def test_sandbox_webhooks_go_to_the_announced_gateway() -> None:
    config = SandboxConfig.from_env({"MPPO_GATEWAY_ADDR": "127.0.0.1:41234"})
    assert config.webhook_url == "http://127.0.0.1:41234/payments/webhook/sandbox"


def test_sandbox_webhook_url_defaults_and_overrides() -> None:
    assert SandboxConfig.from_env({}).webhook_url == DEFAULT_WEBHOOK_URL
    explicit = SandboxConfig.from_env(
        {"MPPO_GATEWAY_ADDR": "127.0.0.1:41234", "MPPO_SANDBOX_WEBHOOK_URL": "http://h:1/x"}
    )
    assert explicit.webhook_url == "http://h:1/x"


def test_payment_return_url_is_the_client_apps_when_configured() -> None:
    assert PaymentSettings.from_env({"MPPO_GATEWAY_ADDR": "127.0.0.1:41234"}).return_url == ""
    settings = PaymentSettings.from_env({"MPPO_PAYMENT_RETURN_URL": "https://app.example/done"})
    assert settings.return_url == "https://app.example/done"
