"""Configuration of the order service, read from the environment once at start.

| variable | meaning | default |
| --- | --- | --- |
| `MPPO_MERCHANT_BASE_URL` | merchant backend base URL | `http://<MPPO_MERCHANT_ADDR>` |
| `MPPO_MERCHANT_ADDR` | sandbox merchant `host:port` | `127.0.0.1:8091` |
| `MPPO_MERCHANT_SECRET` | shared HMAC secret for request signing | `sandbox-merchant-secret` |
| `MPPO_MERCHANT_TIMEOUT` | seconds per merchant HTTP attempt | `3` |
| `MPPO_MERCHANT_ATTEMPTS` | attempts per merchant request | `3` |
| `MPPO_PAYMENT_ADDR` | payment service | `127.0.0.1:50052` |
| `MPPO_ORDER_LEASE_SECONDS` | how long a runner holds an order between steps | `30` |
| `MPPO_ORDER_POLL_SECONDS` | recovery poll interval | `2` |
| `MPPO_ORDER_MAX_ATTEMPTS` | transient failures before a forward step gives up | `5` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mppo.platform.config import ConfigError, ServiceConfig, service_addr

DEFAULT_MERCHANT_ADDR = "127.0.0.1:8091"
DEFAULT_MERCHANT_SECRET = "sandbox-merchant-secret"  # dev/sandbox only; set a real one


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def merchant_base_url(env: Mapping[str, str]) -> str:
    """MPPO_MERCHANT_BASE_URL, else http:// + MPPO_MERCHANT_ADDR (or its default)."""
    url = env.get("MPPO_MERCHANT_BASE_URL", "").strip()
    if url:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"MPPO_MERCHANT_BASE_URL={url!r} is not an http(s) URL")
        return url.rstrip("/")
    addr = env.get("MPPO_MERCHANT_ADDR", "").strip() or DEFAULT_MERCHANT_ADDR
    return f"http://{addr}"


@dataclass(frozen=True)
class OrderConfig(ServiceConfig):
    """The shared service settings plus the merchant, payment and saga settings."""

    merchant_url: str = f"http://{DEFAULT_MERCHANT_ADDR}"
    merchant_secret: str = DEFAULT_MERCHANT_SECRET
    merchant_timeout: float = 3.0
    merchant_attempts: int = 3
    payment_addr: str = "127.0.0.1:50052"
    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    max_attempts: int = 5


def load_config(env: Mapping[str, str] | None = None) -> OrderConfig:
    """The order service's settings (docs/conventions.md and the table above)."""
    source = os.environ if env is None else env
    base = ServiceConfig.from_env("order", source)
    return OrderConfig(
        name=base.name,
        addr=base.addr,
        infra=base.infra,
        log_level=base.log_level,
        merchant_url=merchant_base_url(source),
        merchant_secret=source.get("MPPO_MERCHANT_SECRET", "").strip() or DEFAULT_MERCHANT_SECRET,
        merchant_timeout=_number(source, "MPPO_MERCHANT_TIMEOUT", 3.0),
        merchant_attempts=int(_number(source, "MPPO_MERCHANT_ATTEMPTS", 3)),
        payment_addr=service_addr(source, "payment"),
        lease_seconds=_number(source, "MPPO_ORDER_LEASE_SECONDS", 30.0),
        poll_seconds=_number(source, "MPPO_ORDER_POLL_SECONDS", 2.0),
        max_attempts=int(_number(source, "MPPO_ORDER_MAX_ATTEMPTS", 5)),
    )
