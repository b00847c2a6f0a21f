"""Start the whole system as `mppo dev up` does, on free loopback ports, for a benchmark or a test.

Every process of ``DEFAULT_SERVICES`` runs detached under its own state directory; the sandbox
posts its webhooks to this stack's gateway, the gateway's rate limits are raised out of the
benchmark's way (``rate_limits``) and the merchant's stock is made plentiful. ``stop()`` runs
``mppo dev down`` and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mppo.devstack.probes import free_port
from mppo.devstack.services import DEFAULT_SERVICES
from mppo.devstack.stack import isolated_up_args

__all__ = ["RunningStack", "attach_stack", "start_stack"]

BENCH_STOCK = 1_000_000


@dataclass
class RunningStack:
    """A running stack: where its services listen and which processes belong to it."""

    state_dir: Path
    addrs: dict[str, str]
    pids: dict[str, int]
    nats_url: str
    owned: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        """The gateway, or every gateway replica's URL comma-separated (the load client takes
        turns over them)."""
        addrs = self.extra.get("gateway_addrs") or [self.addrs["gateway"]]
        return ",".join(f"http://{addr}" for addr in addrs)

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.addrs['sandbox']}"

    @property
    def merchant_url(self) -> str:
        return f"http://{self.addrs['merchant']}"

    def stop(self) -> None:
        """``mppo dev down --purge`` for a stack this module started; nothing otherwise."""
        if self.owned:
            _mppo("dev", "down", "--purge", "--state-dir", str(self.state_dir))


def _mppo(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mppo.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(env if env is not None else os.environ),
    )


def _from_state(state_dir: Path, state: dict[str, Any], *, owned: bool) -> RunningStack:
    return RunningStack(
        state_dir=state_dir,
        addrs={name: svc["addr"] for name, svc in state["services"].items()},
        pids={p["name"]: int(p["pid"]) for p in state["processes"]},
        nats_url=str(state["endpoints"].get("nats", "")),
        owned=owned,
        extra={"gateway_addrs": list(state["services"]["gateway"].get("addrs", []))},
    )


def start_stack(
    state_dir: Path,
    *,
    rate_limits: str = "100000/100000",
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
    fsync: bool = True,
    profile: Mapping[str, Path] | None = None,
    replicas: int = 1,
) -> RunningStack:
    """Start infrastructure and every service on free ports under ``state_dir``.

    ``extra_env`` adds environment variables per service name; ``profile`` runs the named
    services under ``python -m bench.cpuprofile <path>`` (cProfile on CPU time; stats are
    written when they stop).
    ``fsync=False`` runs Postgres without fsync (what the tests do); the default is what
    ``make run`` does.
    Raises RuntimeError with the supervisor's output when the stack does not come up.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    ports = {svc.name: free_port() for svc in DEFAULT_SERVICES}
    catalogue = state_dir / "bench-catalogue.json"
    from order_svc.sandbox_merchant.catalogue import DEFAULT_CATALOGUE

    catalogue.write_text(
        json.dumps(
            [{**item, "currency": "USD", "stock": BENCH_STOCK} for item in DEFAULT_CATALOGUE]
        )
    )
    per_service: dict[str, dict[str, str]] = {
        "sandbox": {
            "MPPO_SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{ports['gateway']}"
            "/payments/webhook/sandbox",
            "MPPO_SANDBOX_STATE_FILE": ":memory:",
        },
        "merchant": {"MPPO_MERCHANT_CATALOGUE": str(catalogue)},
        "gateway": {
            "MPPO_GATEWAY_RATE_LIMIT": rate_limits,
            "MPPO_GATEWAY_IP_RATE_LIMIT": rate_limits,
        },
    }
    for name, env in (extra_env or {}).items():
        per_service.setdefault(name, {}).update(env)
    services = []
    for svc in DEFAULT_SERVICES:
        item = asdict(svc)
        item["port"] = ports[svc.name]
        item["env"] = {**dict(svc.env), **per_service.get(svc.name, {})}
        if profile and svc.name in profile:
            command = list(svc.command)
            item["command"] = [command[0], "-m", "bench.cpuprofile", str(profile[svc.name])]
            item["command"] += command[2:]  # the module after "-m"
        services.append(item)
    services_file = state_dir / "bench-services.json"
    services_file.write_text(json.dumps(services))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPPO_")}
    env["MPPO_LOG_LEVEL"] = "WARNING"
    up = _mppo(
        *isolated_up_args(state_dir, services_file, fsync=fsync, replicas=replicas),
        env=env,
    )
    state_path = state_dir / "devstack.json"
    if up.returncode != 0 or not state_path.exists():
        _mppo("dev", "down", "--purge", "--state-dir", str(state_dir))
        raise RuntimeError(f"mppo dev up failed:\n{up.stdout}{up.stderr}")
    return _from_state(state_dir, json.loads(state_path.read_text()), owned=True)


def attach_stack(state_dir: Path) -> RunningStack | None:
    """The stack already running from ``state_dir`` (e.g. ``make run``), or None."""
    path = state_dir.resolve() / "devstack.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("status") != "running":
        return None
    return _from_state(state_dir.resolve(), state, owned=False)
