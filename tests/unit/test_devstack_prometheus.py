"""The Prometheus `mppo dev up --observability` runs: its configuration is one the real
Prometheus accepts (promtool), every metrics endpoint is a target labelled with its service
(one per replica), and a missing binary says how to install it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mppo.devstack.process import ProcessSpec, StartupError
from mppo.devstack.prometheus import (
    ALERT_RULES,
    JOB,
    MetricsTarget,
    config,
    find_prometheus,
    prometheus_spec,
    write_config,
    write_targets,
)
from mppo.devstack.stack import StackConfig

TARGETS = [
    MetricsTarget("group", "127.0.0.1:40001"),
    MetricsTarget("group", "127.0.0.1:40002"),  # a second replica: its own target
    MetricsTarget("gateway", "127.0.0.1:40005"),
]


def test_every_endpoint_is_a_target_labelled_with_its_service(tmp_path: Path) -> None:
    path = write_targets(tmp_path, TARGETS)
    groups = json.loads(path.read_text())
    assert groups == [
        {"targets": ["127.0.0.1:40001"], "labels": {"service": "group"}},
        {"targets": ["127.0.0.1:40002"], "labels": {"service": "group"}},
        {"targets": ["127.0.0.1:40005"], "labels": {"service": "gateway"}},
    ]
    assert list(tmp_path.iterdir()) == [path]  # replaced atomically, nothing left over


def test_the_configuration_scrapes_the_targets_and_loads_the_alerts(tmp_path: Path) -> None:
    document = config(tmp_path)
    (scrape,) = document["scrape_configs"]
    assert scrape["job_name"] == JOB
    assert scrape["file_sd_configs"][0]["files"] == [str(tmp_path / "targets.json")]
    assert document["rule_files"] == [str(ALERT_RULES)]
    assert ALERT_RULES.is_file()


def test_promtool_accepts_the_generated_configuration(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package")
    write_targets(tmp_path, TARGETS)
    path = write_config(tmp_path)
    done = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="make install"):
        find_prometheus({"MPPO_PROMETHEUS_BIN": str(tmp_path / "no-prometheus")})


def test_the_process_listens_on_loopback_with_its_data_in_the_state_dir(tmp_path: Path) -> None:
    spec = prometheus_spec(tmp_path, 49999, binary="/usr/bin/prometheus")
    assert spec.name == "prometheus"
    assert "--web.listen-address=127.0.0.1:49999" in spec.argv
    assert f"--storage.tsdb.path={tmp_path / 'data'}" in spec.argv
    assert f"--config.file={tmp_path / 'prometheus.yml'}" in spec.argv
    assert spec.readiness is not None


class _RecordingSupervisor:
    """Takes the specs `mppo dev up` would start."""

    def __init__(self) -> None:
        self.specs: list[ProcessSpec] = []
        self.processes: list[object] = []

    async def start(self, spec: ProcessSpec) -> None:
        self.specs.append(spec)


async def test_every_replica_serves_metrics_on_its_own_port(tmp_path: Path) -> None:
    """Each process of a metrics-serving service (every replica) gets a free port of its
    own, recorded in devstack.json; a stand-in (the sandbox) gets none."""
    from mppo.devstack.services import DEFAULT_SERVICES
    from mppo.devstack.stack import _Stack, plan_replicas

    services = tuple(s for s in DEFAULT_SERVICES if s.name in ("group", "sandbox"))
    stack = _Stack(StackConfig(state_dir=tmp_path, services=services), io.StringIO(), tmp_path)
    recording = _RecordingSupervisor()
    stack.sup = recording  # type: ignore[assignment]
    plan = plan_replicas(services, replicas=2)
    for svc in services:
        stack.state["services"][svc.name] = {}
        for replica in plan[svc.name]:
            await stack._start_replica(replica, {}, tmp_path)
    by_name = {spec.name: dict(spec.env) for spec in recording.specs}
    assert set(by_name) == {"group-1", "group-2", "sandbox"}
    ports = [by_name[name]["MPPO_METRICS_ADDR"] for name in ("group-1", "group-2")]
    assert len(set(ports)) == 2
    assert "MPPO_METRICS_ADDR" not in by_name["sandbox"]
    recorded = stack.state["services"]["group"]
    assert recorded["metrics_addrs"] == ports
    assert recorded["metrics"] == ports[0]
    assert "metrics" not in stack.state["services"]["sandbox"]
