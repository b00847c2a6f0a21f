"""Pieces of ``mppo demo`` and the benchmark that need no running system: where the demo
finds the system, the percentile maths, the PNG writer and the argument parser."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from bench.charts import main as charts_main
from bench.charts import run_chart
from bench.run import latency_table, percentile
from mppo.cli import build_parser
from mppo.demo import DEFAULT_GATEWAY, DEFAULT_NATS, DemoTargets


def test_targets_come_from_the_state_file_else_defaults(tmp_path: Path) -> None:
    assert DemoTargets.from_state_dir(tmp_path) == DemoTargets(
        DEFAULT_GATEWAY, DEFAULT_NATS, tmp_path
    )
    (tmp_path / "devstack.json").write_text(
        json.dumps(
            {
                "endpoints": {"nats": "nats://127.0.0.1:4999"},
                "services": {"gateway": {"addr": "127.0.0.1:18080"}},
            }
        )
    )
    found = DemoTargets.from_state_dir(tmp_path)
    assert (found.gateway_url, found.nats_url) == (
        "http://127.0.0.1:18080",
        "nats://127.0.0.1:4999",
    )
    explicit = DemoTargets.from_state_dir(tmp_path, "http://h:1", "nats://n:2")
    assert (explicit.gateway_url, explicit.nats_url) == ("http://h:1", "nats://n:2")


def test_demo_arguments() -> None:
    args = build_parser().parse_args(["demo", "--timeout", "5", "--gateway", "http://x:1"])
    assert (args.timeout, args.gateway, args.nats) == (5.0, "http://x:1", None)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (
        50.0,
        95.0,
        99.0,
    )
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0
    table = latency_table({"step": [0.010, 0.020, 0.030]})
    assert table["step"]["count"] == 3
    assert (table["step"]["p50"], table["step"]["p99"]) == (20.0, 30.0)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _report(groups_per_second: float, cpu_ms: dict[str, float]) -> dict[str, Any]:
    latency = {"create group": {"p50": 10.0, "p95": 20.0, "p99": 40.0}}
    return {
        "config": {"members": 4},
        "max": {
            "completed": 10,
            "concurrency": 2,
            "groups_per_second": groups_per_second,
            "latency_ms": latency,
            "cpu": {name: {"cpu_ms_per_checkout": ms} for name, ms in cpu_ms.items()},
        },
        "reference": {"groups_per_second": 20.0},
        "ceiling": {"groups_per_second": 30.0},
        "ratios": {"to fixed reference": groups_per_second / 20.0},
        "half_rate": {"rate": groups_per_second / 2, "latency_ms": latency},
    }


def test_charts_are_drawn_with_matplotlib(tmp_path: Path) -> None:
    before = _report(2.0, {"group": 120.0, "payment": 130.0})
    after = _report(4.0, {"group": 60.0, "payment": 70.0, "gateway": 20.0})
    run_chart(after, tmp_path / "run.png")
    width, height = _png_size((tmp_path / "run.png").read_bytes())
    assert width > 1000
    assert height > 500
    assert charts_main(
        [str(_write(tmp_path / "b.json", before)), str(_write(tmp_path / "a.json", after)),
         "--labels", "before,after", "--out", str(tmp_path / "cpu.png")]
    ) == 0  # fmt: skip
    assert _png_size((tmp_path / "cpu.png").read_bytes())[0] > 1000
    assert charts_main([str(tmp_path / "a.json"), "--labels", "x,y", "--out", "z.png"]) == 2


def _write(path: Path, report: dict[str, Any]) -> Path:
    path.write_text(json.dumps(report))
    return path


def test_python_cpu_counts_every_replica_of_a_service() -> None:
    from bench.run import _service_of

    assert [_service_of(n) for n in ("payment", "payment-2", "gateway-1", "smtp-sink")] == [
        "payment",
        "payment",
        "gateway",
        "",
    ]
