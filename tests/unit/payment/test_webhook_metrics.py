"""Every webhook received is counted per provider (the payment autoscaler's signal); one that
fails verification is counted again as such (the MppoWebhookSignatureFailures alert reads
it), one that verifies is not."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from mppo.platform.errors import UnauthenticatedError
from payment_svc.service_layer import commands
from tests.unit.payment.test_handlers import World


def failures(provider: str) -> float:
    labels = {"provider": provider}
    value = REGISTRY.get_sample_value("mppo_payment_webhook_verification_failures_total", labels)
    return value or 0.0


def received(provider: str) -> float:
    value = REGISTRY.get_sample_value("mppo_webhooks_received_total", {"provider": provider})
    return value or 0.0


def webhook(ppid: str, signature: str) -> commands.HandleWebhook:
    body = {"id": f"evt_{signature}", "object": ppid, "status": "authorized", "amount": 700}
    return commands.HandleWebhook(
        provider="sandbox", body=json.dumps(body).encode(), headers={"X-Signature": signature}
    )


async def test_failed_verifications_are_counted_per_provider() -> None:
    world = World()
    payment = await world.create(700)
    before, seen = failures("sandbox"), received("sandbox")
    for _ in range(2):
        with pytest.raises(UnauthenticatedError):
            await world.handlers.handle_webhook(
                webhook(payment.provider_payment_id, "forged"), world.uow()
            )
    assert failures("sandbox") == before + 2
    await world.handlers.handle_webhook(webhook(payment.provider_payment_id, "valid"), world.uow())
    assert failures("sandbox") == before + 2
    assert received("sandbox") == seen + 3
