"""The provider simulators as ``mppo dev up`` runs them: dev/test only, configured from the
variables the payment service reads for the real provider, sharing fresh credentials."""

from __future__ import annotations

import aiohttp
import pytest

from mppo.devstack.services import DEFAULT_SERVICES
from mppo.devstack.stack import dev_simulated_providers
from mppo.platform.config import ConfigError
from payment_svc.settings import PaymentSettings
from payment_svc.simulators.__main__ import build, main
from payment_svc.simulators.paypal import PayPalSimulator
from payment_svc.simulators.razorpay import RazorpaySimulator

ANNOUNCED = {"paypal": "127.0.0.1:18092", "razorpay": "127.0.0.1:18093"}


def dev_env() -> dict[str, str]:
    return {
        "MPPO_ENV": "dev",
        "MPPO_PAYPAL_ADDR": ANNOUNCED["paypal"],
        "MPPO_RAZORPAY_ADDR": ANNOUNCED["razorpay"],
        "MPPO_GATEWAY_ADDR": "127.0.0.1:18080",
        **dev_simulated_providers(DEFAULT_SERVICES, ANNOUNCED),
    }


def test_the_dev_stack_offers_each_simulator_with_fresh_shared_credentials() -> None:
    env = dev_env()
    assert env["MPPO_PAYMENT_PROVIDERS"] == "sandbox,paypal,razorpay"
    assert env["MPPO_PAYPAL_API_BASE"] == "http://127.0.0.1:18092"
    assert env["MPPO_RAZORPAY_API_BASE"] == "http://127.0.0.1:18093"
    again = dev_simulated_providers(DEFAULT_SERVICES, ANNOUNCED)
    assert again["MPPO_RAZORPAY_KEY_SECRET"] != env["MPPO_RAZORPAY_KEY_SECRET"]  # per run
    paypal, host, port = build("paypal", env)
    assert isinstance(paypal, PayPalSimulator)
    assert (host, port) == ("127.0.0.1", 18092)
    assert paypal.client_id == env["MPPO_PAYPAL_CLIENT_ID"]
    assert paypal.deliver_to == "http://127.0.0.1:18080/payments/webhook/paypal"
    razorpay, _, _ = build("razorpay", env)
    assert isinstance(razorpay, RazorpaySimulator)
    assert razorpay.webhook_secret == env["MPPO_RAZORPAY_WEBHOOK_SECRET"]
    # the payment service offers them from the same variables
    settings = PaymentSettings.from_env(env)
    assert settings.paypal is not None
    assert settings.paypal.client_id == env["MPPO_PAYPAL_CLIENT_ID"]
    assert settings.razorpay is not None
    assert settings.razorpay.key_id == env["MPPO_RAZORPAY_KEY_ID"]


def test_no_simulator_no_setting() -> None:
    only_core = [s for s in DEFAULT_SERVICES if s.name not in ("paypal", "razorpay")]
    assert dev_simulated_providers(only_core, {}) == {}


def test_what_the_user_exported_wins_over_the_simulators() -> None:
    exported = {"MPPO_PAYMENT_PROVIDERS": "stripe", "MPPO_PAYPAL_CLIENT_ID": "mine"}
    env = dev_simulated_providers(DEFAULT_SERVICES, ANNOUNCED, exported)
    assert "MPPO_PAYMENT_PROVIDERS" not in env  # members choose from what the user offers
    assert not any(k.startswith("MPPO_PAYPAL_") for k in env)  # PayPal is the user's
    assert env["MPPO_RAZORPAY_API_BASE"] == "http://127.0.0.1:18093"
    # the PayPal simulator still starts (unused) with the user's variables and fresh others
    paypal, _, _ = build("paypal", dev_env() | {"MPPO_PAYPAL_CLIENT_ID": "mine"})
    assert isinstance(paypal, PayPalSimulator)
    assert paypal.client_id == "mine"


def test_a_simulator_refuses_to_run_outside_dev_or_without_an_address() -> None:
    with pytest.raises(ConfigError, match="MPPO_ENV"):
        build("paypal", dev_env() | {"MPPO_ENV": "prod"})
    env = dev_env()
    del env["MPPO_RAZORPAY_ADDR"]
    with pytest.raises(ConfigError, match="MPPO_RAZORPAY_ADDR"):
        build("razorpay", env)
    with pytest.raises(ConfigError, match="no simulator"):
        build("stripe", dev_env())
    assert main([]) == 2


async def test_a_browser_submitting_a_hosted_page_gets_a_page_and_a_program_json() -> None:
    simulator = RazorpaySimulator()
    base = await simulator.start()
    try:
        async with aiohttp.ClientSession() as http:
            links: list[str] = []
            key = aiohttp.encode_basic_auth(simulator.key_id, simulator.key_secret)
            for _ in range(2):
                async with http.post(
                    f"{base}/v1/payment_links",
                    json={"amount": 800, "currency": "USD", "reference_id": f"r-{len(links)}"},
                    headers={"Authorization": key},
                ) as made:
                    assert made.status == 200, await made.text()
                    links.append((await made.json())["id"])
            browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
            async with http.post(
                f"{base}/_fake/pay/{links[0]}", data={"outcome": "captured"}, headers=browser
            ) as page:
                assert page.content_type == "text/html"
                assert "Paid with Razorpay." in await page.text()
            async with http.post(f"{base}/_fake/pay/{links[1]}", data={"outcome": "captured"}) as r:
                assert (await r.json())["status"] == "captured"
    finally:
        await simulator.stop()
