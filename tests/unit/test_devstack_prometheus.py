"""The Prometheus `mppo dev up --observability` runs: its configuration is one the real
Prometheus accepts (promtool), every metrics endpoint is a target labelled with its service
(one per replica), and a missing binary says how to install it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mppo.devstack.process import StartupError
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
