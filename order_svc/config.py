"""Configuration of the order service, read from the environment once at start.

| variable | meaning | default |
| --- | --- | --- |
| `MPPO_MERCHANT_BASE_URL` | merchant backend base URL | `http://<MPPO_MERCHANT_ADDR>` |
| `MPPO_MERCHANT_ADDR` | sandbox merchant `host:port` | `127.0.0.1:8091` |
| `MPPO_MERCHANT_SECRET` | HMAC secret for request signing (required in prod) | dev/test only |
| `MPPO_MERCHANT_TIMEOUT` | seconds per merchant HTTP attempt | `3` |
| `MPPO_MERCHANT_ATTEMPTS` | attempts per merchant request | `3` |
| `MPPO_PAYMENT_ADDR` | payment service | `127.0.0.1:50052` |
| `MPPO_GROUP_ADDR` | group service (who may read an order) | `127.0.0.1:50051` |
| `MPPO_ORDER_LEASE_SECONDS` | how long a runner holds an order between steps | `30` |
| `MPPO_ORDER_POLL_SECONDS` | recovery poll interval | `2` |
| `MPPO_ORDER_MAX_ATTEMPTS` | transient failures before a forward step gives up | `5` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mppo.platform.config import ServiceConfig, service_addr
from mppo.platform.environment import secret
from mppo.platform.settings import Env

DEFAULT_MERCHANT_ADDR = "127.0.0.1:8091"
DEFAULT_MERCHANT_SECRET = "sandbox-merchant-secret"  # dev/sandbox only; set a real one
#: the smallest duration accepted where a setting must be positive
_POSITIVE = 0.001


def merchant_base_url(env: Env) -> str:
    """MPPO_MERCHANT_BASE_URL, else http:// + MPPO_MERCHANT_ADDR (or its default)."""
    url = env.url("MPPO_MERCHANT_BASE_URL")
    if url:
        return url.rstrip("/")
    return f"http://{env.addr('MPPO_MERCHANT_ADDR', DEFAULT_MERCHANT_ADDR)}"


@dataclass(frozen=True)
class OrderConfig(ServiceConfig):
    """The shared service settings plus the merchant, payment and saga settings."""

    merchant_url: str = f"http://{DEFAULT_MERCHANT_ADDR}"
    merchant_secret: str = DEFAULT_MERCHANT_SECRET
    merchant_timeout: float = 3.0
    merchant_attempts: int = 3
    payment_addr: str = "127.0.0.1:50052"
    group_addr: str = "127.0.0.1:50051"
    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    max_attempts: int = 5


def load_config(source: Mapping[str, str] | None = None) -> OrderConfig:
    """The order service's settings (docs/conventions.md and the table above)."""
    raw = os.environ if source is None else source
    env = Env(raw)
    base = ServiceConfig.from_env("order", raw)
    return OrderConfig(
        name=base.name,
        addr=base.addr,
        infra=base.infra,
        log_level=base.log_level,
        merchant_url=merchant_base_url(env),
        merchant_secret=secret(raw, "MPPO_MERCHANT_SECRET", DEFAULT_MERCHANT_SECRET),
        merchant_timeout=env.number("MPPO_MERCHANT_TIMEOUT", 3.0, minimum=_POSITIVE),
        merchant_attempts=env.integer("MPPO_MERCHANT_ATTEMPTS", 3, minimum=1),
        payment_addr=service_addr(raw, "payment"),
        group_addr=service_addr(raw, "group"),
        lease_seconds=env.number("MPPO_ORDER_LEASE_SECONDS", 30.0, minimum=_POSITIVE),
        poll_seconds=env.number("MPPO_ORDER_POLL_SECONDS", 2.0, minimum=_POSITIVE),
        max_attempts=env.integer("MPPO_ORDER_MAX_ATTEMPTS", 5, minimum=1),
    )
