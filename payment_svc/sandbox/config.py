"""Settings of the sandbox provider, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mppo.platform.config import ConfigError
from mppo.platform.environment import secret

DEFAULT_ADDR = "127.0.0.1:8090"
#: dev/test only (published in docs/payment.md): refused outside MPPO_ENV=dev|test, and the
#: real Stripe provider never falls back to them
DEV_API_KEY = "sk_test_mppo_sandbox"
DEV_WEBHOOK_SECRET = "whsec_mppo_sandbox_dev_only"
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8080/payments/webhook/sandbox"
WEBHOOK_PATH = "/payments/webhook/sandbox"


def default_webhook_url(env: Mapping[str, str]) -> str:
    """The gateway's webhook endpoint: ``http://$MPPO_GATEWAY_ADDR/payments/webhook/sandbox``
    (``mppo dev up`` announces the gateway's address to every process), else the default."""
    gateway = env.get("MPPO_GATEWAY_ADDR", "").strip()
    return f"http://{gateway}{WEBHOOK_PATH}" if gateway else DEFAULT_WEBHOOK_URL


@dataclass(frozen=True)
class SandboxConfig:
    """Where the sandbox listens, whom it calls back, and where it keeps its state."""

    host: str
    port: int
    public_url: str
    api_key: str
    webhook_secret: str
    webhook_url: str
    state_file: Path | None
    webhook_attempts: int
    webhook_backoff: float
    webhook_max_backoff: float
    webhook_timeout: float
    #: days an authorization lasts before it lapses (Stripe: 7 for online card payments)
    authorization_days: float
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read MPPO_SANDBOX_* (see docs/payment.md); the development key and secret only
        with MPPO_ENV=dev|test."""
        source = os.environ if env is None else env
        addr = source.get("MPPO_SANDBOX_ADDR", "").strip() or DEFAULT_ADDR
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"MPPO_SANDBOX_ADDR={addr!r} is not host:port")
        state = source.get("MPPO_SANDBOX_STATE_FILE", "").strip()
        if not state:
            state_dir = source.get("MPPO_STATE_DIR", "").strip()
            state = str(Path(state_dir) / "sandbox" / "state.jsonl") if state_dir else ""
        return cls(
            host=host,
            port=int(port),
            public_url=(source.get("MPPO_SANDBOX_PUBLIC_URL", "").strip() or f"http://{addr}"),
            api_key=secret(source, "MPPO_SANDBOX_API_KEY", DEV_API_KEY),
            webhook_secret=secret(source, "MPPO_SANDBOX_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
            webhook_url=source.get("MPPO_SANDBOX_WEBHOOK_URL", "").strip()
            or default_webhook_url(source),
            state_file=Path(state) if state and state != ":memory:" else None,
            webhook_attempts=int(source.get("MPPO_SANDBOX_WEBHOOK_ATTEMPTS", "8")),
            webhook_backoff=float(source.get("MPPO_SANDBOX_WEBHOOK_BACKOFF", "0.5")),
            webhook_max_backoff=float(source.get("MPPO_SANDBOX_WEBHOOK_MAX_BACKOFF", "30")),
            webhook_timeout=float(source.get("MPPO_SANDBOX_WEBHOOK_TIMEOUT", "10")),
            authorization_days=float(source.get("MPPO_SANDBOX_AUTHORIZATION_DAYS", "7")),
            log_level=source.get("MPPO_LOG_LEVEL", "INFO").upper(),
        )
