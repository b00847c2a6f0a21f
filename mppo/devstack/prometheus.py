"""A real Prometheus for ``mppo dev up --observability``: Debian's ``prometheus`` binary (``make
install`` puts it at /usr/bin/prometheus; ``MPPO_PROMETHEUS_BIN`` names another) scraping every
process that serves metrics, with the alert rules of deploy/prometheus/alerts.yml loaded.

Each metrics endpoint is one scrape target labelled with its ``service`` (``instance`` is its
address), listed in ``<state>/prometheus/targets.json`` (file-based discovery, re-read every
few seconds), so a replica added later is one more entry. Data lives in
``<state>/prometheus/data``; the stack's ``endpoints`` name the server's URL.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mppo.devstack.probes import http_get_probe
from mppo.devstack.process import ProcessSpec, StartupError

__all__ = [
    "ALERT_RULES",
    "JOB",
    "PROMETHEUS_BIN_VAR",
    "MetricsTarget",
    "find_prometheus",
    "prometheus_spec",
    "write_config",
    "write_targets",
]

PROMETHEUS_BIN_VAR = "MPPO_PROMETHEUS_BIN"
JOB = "mppo"
ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
#: how often the development Prometheus scrapes and evaluates (production: deploy/prometheus)
SCRAPE_INTERVAL = "2s"


@dataclass(frozen=True)
class MetricsTarget:
    """One process's /metrics: the service it is and where it listens."""

    service: str
    addr: str


def find_prometheus(env: Mapping[str, str] | None = None) -> str:
    """The prometheus binary, or StartupError saying how to install it."""
    source = os.environ if env is None else env
    wanted = source.get(PROMETHEUS_BIN_VAR, "").strip()
    found = wanted or shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.access(found, os.X_OK):
        raise StartupError(
            f"--observability needs Prometheus at {found}: `make install` installs Debian's "
            f"package (apt-get install prometheus), or set {PROMETHEUS_BIN_VAR}"
        )
    return found


def write_targets(directory: Path, targets: Iterable[MetricsTarget]) -> Path:
    """``targets.json`` for file-based discovery: one group per target, atomically replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    groups = [{"targets": [t.addr], "labels": {"service": t.service}} for t in targets]
    path = directory / "targets.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(groups, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def config(directory: Path, rules: Path = ALERT_RULES) -> dict[str, Any]:
    """The server's configuration: every discovered target, the alert rules."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "file_sd_configs": [
                    {"files": [str(directory / "targets.json")], "refresh_interval": "5s"}
                ],
            }
        ],
    }


def write_config(directory: Path, rules: Path = ALERT_RULES) -> Path:
    """``prometheus.yml`` (JSON is YAML) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config(directory, rules), indent=2) + "\n")
    return path


def prometheus_spec(directory: Path, port: int, binary: str | None = None) -> ProcessSpec:
    """The Prometheus process on 127.0.0.1:`port`, ready when ``/-/ready`` answers 200."""
    import signal

    return ProcessSpec(
        name="prometheus",
        argv=[
            binary or find_prometheus(),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2d",
            "--log.format=json",
        ],
        env={},
        readiness=http_get_probe("127.0.0.1", port, "/-/ready"),
        ready_timeout=60.0,
        stop_signal=signal.SIGTERM,
        stop_timeout=10.0,
        pdeath_signal=signal.SIGKILL,
    )
