"""The Grafana dashboard is generated from code (grafana-foundation-sdk) and the committed JSON
is what the code generates today; its queries read only metrics our processes export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mppo.observability.dashboard import DASHBOARD_FILE, render
from tests.unit.test_alert_rules import exported_names, metric_names

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_dashboard_is_what_the_code_generates() -> None:
    assert DASHBOARD_FILE.read_text() == render(), "stale: run `make dashboard`"


def test_the_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    original = DASHBOARD_FILE.read_text()
    try:
        DASHBOARD_FILE.write_text(original.replace("Checkout", "Chekout", 1))
        stale = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "gen_dashboard.py"), "--check"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        DASHBOARD_FILE.write_text(original)
    assert stale.returncode == 1
    assert "stale" in stale.stderr


def test_every_panel_queries_exported_metrics_by_service() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) >= 20
    known = exported_names() | {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }
    for panel in panels:
        assert panel["title"]
        assert panel.get("description"), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            used = metric_names(expr)
            assert used, f"{panel['title']}: {expr}"
            assert used <= known, f"{panel['title']}: {sorted(used - known)}"
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "service", "instance"} <= names
