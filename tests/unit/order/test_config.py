"""Order service settings."""

from __future__ import annotations

import pytest

from mppo.platform.config import ConfigError
from order_svc.config import load_config

BASE = {
    "MPPO_ORDER_DATABASE_URL": "postgresql://u@h:5432/order_db",
    "MPPO_REDIS_URL": "redis://h:6379",
    "MPPO_NATS_URL": "nats://h:4222",
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
