"""Order service settings."""

from __future__ import annotations

import pytest

from mppo.platform.config import ConfigError
from order_svc.config import load_config

BASE = {
    "MPPO_ORDER_DATABASE_URL": "postgresql://u@h:5432/order_db",
    "MPPO_REDIS_URL": "redis://h:6379",
    "MPPO_NATS_URL": "nats://h:4222",
    "MPPO_ENV": "test",
}


def test_defaults_point_at_the_sandbox_merchant() -> None:
    config = load_config(BASE)
    assert config.merchant_url == "http://127.0.0.1:8091"
    assert config.payment_addr == "127.0.0.1:50052"
    assert config.name == "order"


def test_addr_and_base_url() -> None:
    assert (
        load_config({**BASE, "MPPO_MERCHANT_ADDR": "127.0.0.1:9"}).merchant_url
        == "http://127.0.0.1:9"
    )
    url = load_config({**BASE, "MPPO_MERCHANT_BASE_URL": "https://m.example/api/"}).merchant_url
    assert url == "https://m.example/api"
    with pytest.raises(ConfigError):
        load_config({**BASE, "MPPO_MERCHANT_BASE_URL": "ftp://x"})
    with pytest.raises(ConfigError):
        load_config({**BASE, "MPPO_ORDER_LEASE_SECONDS": "-1"})


def test_outside_development_the_merchant_secret_must_be_set_and_not_the_default() -> None:
    prod = {**BASE, "MPPO_ENV": "prod"}
    with pytest.raises(ConfigError, match="MPPO_MERCHANT_SECRET"):
        load_config(prod)
    with pytest.raises(ConfigError, match="MPPO_MERCHANT_SECRET"):
        load_config({**prod, "MPPO_MERCHANT_SECRET": "sandbox-merchant-secret"})
    assert load_config({**prod, "MPPO_MERCHANT_SECRET": "s3cret"}).merchant_secret == "s3cret"
    assert load_config(BASE).merchant_secret == "sandbox-merchant-secret"  # dev/test only


def test_numbers_are_checked() -> None:
    with pytest.raises(ConfigError, match="MPPO_ORDER_POLL_SECONDS"):
        load_config({**BASE, "MPPO_ORDER_POLL_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="MPPO_MERCHANT_ATTEMPTS"):
        load_config({**BASE, "MPPO_MERCHANT_ATTEMPTS": "0"})
    config = load_config({**BASE, "MPPO_ORDER_LEASE_SECONDS": "3", "MPPO_GROUP_ADDR": "g:1"})
    assert (config.lease_seconds, config.group_addr) == (3.0, "g:1")
