"""Configuration of the group service, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from mppo.platform.config import ConfigError, ServiceConfig, service_addr


def load_config() -> ServiceConfig:
    """The group service's shared settings (docs/conventions.md lists the variables)."""
    return ServiceConfig.from_env("group")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class GroupSettings:
    """Settings only the group service has.

    | variable | meaning | default |
    | --- | --- | --- |
    | MPPO_PAYMENT_ADDR | the payment service | 127.0.0.1:50052 |
    | MPPO_GROUP_HOST_GRACE_SECONDS | host's grace after HOST_PAYS_REMAINING | 900 |
    | MPPO_GROUP_REMINDER_LEAD_SECONDS | group.reminder_due this long before the deadline | 3600 |
    | MPPO_GROUP_SCHEDULER | run the expiry scheduler in the service (`on`/`off`) | on |
    | MPPO_GROUP_SCHEDULER_INTERVAL | seconds between scheduler rounds | 1.0 |
    | MPPO_GROUP_PII_KEYS | `id:<base64 32 bytes>,…`, first is active (adapters/pii.py) | dev key |
    """

    payment_addr: str
    host_grace: timedelta
    reminder_lead: timedelta
    scheduler_enabled: bool
    scheduler_interval: float
    payment_timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GroupSettings:
        """Read the settings, failing fast on malformed values."""
        source = os.environ if env is None else env
        enabled = source.get("MPPO_GROUP_SCHEDULER", "on").strip().lower()
        if enabled not in ("on", "off"):
            raise ConfigError("MPPO_GROUP_SCHEDULER must be on or off")
        return cls(
            payment_addr=service_addr(source, "payment"),
            host_grace=timedelta(seconds=_seconds(source, "MPPO_GROUP_HOST_GRACE_SECONDS", 900)),
            reminder_lead=timedelta(
                seconds=_seconds(source, "MPPO_GROUP_REMINDER_LEAD_SECONDS", 3600)
            ),
            scheduler_enabled=enabled == "on",
            scheduler_interval=_seconds(source, "MPPO_GROUP_SCHEDULER_INTERVAL", 1.0) or 1.0,
        )
