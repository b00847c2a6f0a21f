"""The benchmark and ``mppo demo`` against a real stack (every process of ``mppo dev up``, on
free ports, Postgres without fsync): the generator completes 5 group checkouts of four members
and its report holds real figures; the demo prints a complete timeline of one confirmed group,
and says so clearly when no system is running."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import RunningStack, start_stack
from mppo import cli

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("bench-stack"), fsync=False)
    try:
        yield running
    finally:
        running.stop()


def test_bench_reports_real_figures_for_five_groups(stack: RunningStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--attach", str(stack.state_dir), "--groups", "5",
         "--concurrency", "2", "--warmup", "0", "--half-rate-groups", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "latest.json").read_text())
    peak = report["max"]
    assert peak["completed"] == 5
    assert peak["errors"] == {}
    for step in ("create group", "add members", "join", "open group", "pay (sandbox)",
                 "webhook -> member.paid", "last payment -> order.confirmed"):  # fmt: skip
        assert peak["latency_ms"][step]["p50"] > 0, step
    assert peak["latency_ms"]["join"]["count"] == 15
    assert peak["latency_ms"]["pay (sandbox)"]["count"] == 20
    assert peak["latency_ms"]["webhook -> member.paid"]["count"] == 20
    assert peak["per_checkout"]["transactions"] > 10
    assert peak["per_checkout"]["publishes"] > 10
    assert peak["cpu"]["group"]["cpu_seconds"] > 0
    assert report["ceiling"]["groups_per_second"] > 0
    assert report["ratio_to_ceiling"] == pytest.approx(
        peak["groups_per_second"] / report["ceiling"]["groups_per_second"], rel=0.01
    )
    reference = report["reference"]  # the fixed reference checkout, replayed in the same run
    assert (reference["transactions_per_group"], reference["publishes_per_group"]) == (30, 20)
    assert reference["groups"] == 5
    assert reference["groups_per_second"] > 0
    assert report["ratio_to_reference"] == pytest.approx(
        peak["groups_per_second"] / reference["groups_per_second"], rel=0.01
    )
    assert report["python_cpu_ms_per_checkout"] == pytest.approx(
        sum(peak["cpu"][name]["cpu_ms_per_checkout"] for name in
            ("group", "payment", "order", "notification", "gateway")), abs=0.05
    )  # fmt: skip
    assert report["half_rate"]["completed"] == 2
    png = (out / "latest.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000


def test_demo_prints_a_complete_timeline(stack: RunningStack) -> None:
    out = io.StringIO()
    code = cli.main(["demo", "--state-dir", str(stack.state_dir), "--timeout", "60"], out)
    text = out.getvalue()
    assert code == 0, text
    assert "result: GROUP_STATUS_CONFIRMED" in text
    for expected in ("DRAFT       -> OPEN", "OPEN        -> PENDING", "PENDING     -> CONFIRMED",
                     "event   group.created", "event   member.paid", "event   payment.captured",
                     "event   order.confirmed", "ledger  hold", "ledger  capture",
                     "ORDER_STATUS_CONFIRMED", "GROUP_CONFIRMED"):  # fmt: skip
        assert expected in text, expected
    assert text.count("event   member.paid") == 4
    assert "PAYMENT_STATUS_CAPTURED" in text


def test_demo_without_a_running_system_exits_non_zero(tmp_path: Path) -> None:
    from mppo.devstack.probes import free_port

    out = io.StringIO()
    code = cli.main(
        ["demo", "--state-dir", str(tmp_path), "--gateway", f"http://127.0.0.1:{free_port()}"],
        out,
    )
    assert code == 2
    assert "the system is not running" in out.getvalue()
