"""Typed configuration read from the environment once, at start, failing fast.

Each service holds one frozen dataclass (its own `config.py`); the pieces every service
shares live here. Variable names are listed in docs/conventions.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mppo.platform.retention import RetentionSettings


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


DEFAULT_ADDRS: Mapping[str, str] = {
    "group": "127.0.0.1:50051",
    "payment": "127.0.0.1:50052",
    "order": "127.0.0.1:50053",
    "notification": "127.0.0.1:50054",
    "gateway": "127.0.0.1:8080",
}


STREAM_REPLICAS_VAR = "MPPO_NATS_STREAM_REPLICAS"


def require(env: Mapping[str, str], name: str) -> str:
    """The value of `name`, or ConfigError naming the variable."""
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set (see docs/conventions.md)")
    return value


def service_addr(env: Mapping[str, str], service: str) -> str:
    """Where callers reach `service`, from MPPO_<SERVICE>_ADDR or its default: `host:port`,
    several `host:port` of its replicas (IP addresses), or a `dns:///name:port` target
    (mppo.platform.targets; channels balance round robin over every address)."""
    from mppo.platform.targets import validate_target  # targets imports this module

    name = f"MPPO_{service.upper()}_ADDR"
    return validate_target(name, env.get(name, "").strip() or DEFAULT_ADDRS[service])


def listen_addr(env: Mapping[str, str], service: str) -> str:
    """The one `host:port` process `service` listens on, from MPPO_<SERVICE>_ADDR (a replica
    is given its own address there; its callers get every replica's)."""
    name = f"MPPO_{service.upper()}_ADDR"
    value = env.get(name, "").strip() or DEFAULT_ADDRS[service]
    host, sep, port = value.rpartition(":")
    valid = sep and host and "," not in host and "/" not in host and port.isdigit()
    if not valid or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{name}={value!r} is not host:port (the address this process listens on)"
        )
    return value


def _default_retention() -> RetentionSettings:
    from mppo.platform.retention import RetentionSettings  # retention imports this module

    return RetentionSettings()


@dataclass(frozen=True)
class InfraConfig:
    """Where a service finds its own database, Redis and NATS, and how long what the platform
    writes there is kept (streams, outbox, inbox, idempotency keys)."""

    database_url: str
    redis_url: str
    nats_url: str
    nats_prefix: str
    retention: RetentionSettings = field(default_factory=_default_retention, kw_only=True)
    #: replicas of each MPPO stream (MPPO_NATS_STREAM_REPLICAS: 1, or 3/5 on a JetStream
    #: cluster); existing streams are brought to it at start (messaging.ensure_streams)
    stream_replicas: int = field(default=1, kw_only=True)

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> InfraConfig:
        """Read MPPO_<SERVICE>_DATABASE_URL, MPPO_REDIS_URL, MPPO_NATS_URL (one URL or a
        comma-separated list of a cluster's servers), MPPO_NATS_PREFIX,
        MPPO_NATS_STREAM_REPLICAS and MPPO_RETENTION_* (refusing unsafe retention windows)."""
        from mppo.platform.retention import RetentionSettings  # retention imports this module

        source = os.environ if env is None else env
        prefix = source.get("MPPO_NATS_PREFIX", "").strip()
        if prefix and not prefix.replace("_", "").isalnum():
            raise ConfigError(f"MPPO_NATS_PREFIX={prefix!r} must be letters, digits or _")
        database_url = require(source, f"MPPO_{service.upper()}_DATABASE_URL")
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"MPPO_{service.upper()}_DATABASE_URL must be a postgresql:// URL")
        return cls(
            database_url=database_url,
            redis_url=require(source, "MPPO_REDIS_URL"),
            nats_url=require(source, "MPPO_NATS_URL"),
            nats_prefix=prefix,
            retention=RetentionSettings.from_env(source),
            stream_replicas=stream_replicas(source),
        )


def stream_replicas(env: Mapping[str, str]) -> int:
    """MPPO_NATS_STREAM_REPLICAS: 1 (default), 3 or 5 (JetStream keeps an odd quorum)."""
    raw = env.get(STREAM_REPLICAS_VAR, "").strip() or "1"
    if raw not in ("1", "3", "5"):
        raise ConfigError(f"{STREAM_REPLICAS_VAR}={raw!r} must be 1, 3 or 5")
    return int(raw)


@dataclass(frozen=True)
class ServiceConfig:
    """What every gRPC service needs: its name, listen address and infrastructure."""

    name: str
    addr: str
    infra: InfraConfig
    log_level: str

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Read the shared settings of `service` from the environment."""
        source = os.environ if env is None else env
        return cls(
            name=service,
            addr=listen_addr(source, service),
            infra=InfraConfig.from_env(service, source),
            log_level=source.get("MPPO_LOG_LEVEL", "INFO").upper(),
        )
