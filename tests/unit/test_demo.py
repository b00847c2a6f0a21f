"""Pieces of ``mppo demo`` and the benchmark that need no running system: where the demo
finds the system, the percentile maths, the PNG writer and the argument parser."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from bench.png import Canvas, latency_chart
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


def _decode_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def test_png_is_valid_and_draws_what_it_is_told(tmp_path: Path) -> None:
    canvas = Canvas(4, 3)
    canvas.rect(1, 1, 2, 1, (255, 0, 0))
    width, height, raw = _decode_png(canvas.png())
    assert (width, height) == (4, 3)
    row1 = raw[1 * (1 + 12) + 1 : 2 * (1 + 12)]
    assert row1 == bytes((255, 255, 255, 255, 0, 0, 255, 0, 0, 255, 255, 255))
    path = tmp_path / "chart.png"
    latency_chart(path, ["TITLE 1.5/S"], [("CREATE", 1.0, 2.0, 4.0), ("PAY", 0.5, 1.0, 2.0)])
    width, height, raw = _decode_png(path.read_bytes())
    assert width > 500
    assert height > 50
    assert len(raw) == height * (1 + 3 * width)
    assert bytes((214, 60, 60)) in raw  # the p99 bars
