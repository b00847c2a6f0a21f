"""The alert rules (deploy/prometheus/alerts.yml) are valid for Prometheus (`promtool check
rules`), behave as their unit tests say (`promtool test rules`: each fires on what it is about
and stays quiet on its neighbours), read only metrics our processes export, and each has a
runbook line in the README."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import group_svc.observability
import order_svc.observability
import payment_svc.observability
from mppo.platform import metrics
from mppo.platform.retention import Pruner, PruneTarget

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
README = REPO / "README.md"
SERVICE_METRICS = (group_svc.observability, order_svc.observability, payment_svc.observability)


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).exists():
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120
    )


def alerts() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = run("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested() -> None:
    tested = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())
    names = {
        case["alertname"]
        for test in tested["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert names == {str(rule["alert"]) for rule in alerts()}


def test_promtool_accepts_the_production_scrape_config() -> None:
    result = run("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    """Every sample name the processes can export (the pruner's once a pruner exists)."""
    assert SERVICE_METRICS  # imported for their metrics
    keep = Pruner(None, [PruneTarget("t", "at", timedelta(days=1))])  # type: ignore[arg-type]
    metrics.watch_pruner(keep)
    names = {"up"}
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_count", "_sum", "_bucket"))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers and groupings removed)."""
    bare = re.sub(r"\{[^}]*\}", "", expr)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    return set(re.findall(r"\b(?:mppo|grpc|process)_[a-z0-9_]+\b|\bup\b", bare))


def test_alerts_read_only_exported_metrics() -> None:
    known = exported_names()
    for rule in alerts():
        used = metric_names(str(rule["expr"]))
        assert used, rule["alert"]
        assert used <= known, f"{rule['alert']} reads {sorted(used - known)}"


def test_the_readme_has_a_runbook_line_per_alert() -> None:
    text = README.read_text()
    section = text[text.index("## Observing it") :]
    for rule in alerts():
        line = next((ln for ln in section.splitlines() if f"`{rule['alert']}`" in ln), "")
        assert line, f"README 'Observing it' does not explain {rule['alert']}"
        _, means, runbook = (cell.strip() for cell in line.strip().strip("|").split("|"))
        assert means, line
        assert runbook, line
