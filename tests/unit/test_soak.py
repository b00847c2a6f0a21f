"""The soak benchmark's pure parts: its retention windows are ones the services accept, and its
analysis tells a store that levels off from one that grows linearly; the chart is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.charts import soak_chart
from bench.soak import analyse, retention_env
from mppo.platform.retention import RetentionSettings

MIB = 1 << 20


def test_soak_windows_are_accepted_by_the_services() -> None:
    for window in (10.0, 60.0, 600.0):
        env = {"MPPO_ENV": "dev", **retention_env(window)}
        settings = RetentionSettings.from_env(env)
        assert settings.outbox.total_seconds() == window
        assert settings.inbox.total_seconds() > (
            settings.streams.max_age + settings.streams.duplicate_window
        )


def samples(sizes: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "t": 10.0 * i,
            "phase": "load",
            "databases": {"group_db": size, "payment_db": 40 * MIB},
            "tables": {"group_db": {"outbox": {"bytes": size // 4, "rows": i}}},
            "streams": {"MPPO_GROUP": {"bytes": min(i, 5) * MIB, "messages": i}},
        }
        for i, size in enumerate(sizes)
    ]


def test_analysis_tells_levelling_off_from_linear_growth() -> None:
    levelled = analyse(samples([40 * MIB + min(i, 6) * 4 * MIB for i in range(18)]))
    assert levelled["databases"]["group_db"]["levelled_off"] is True
    assert levelled["streams"]["MPPO_GROUP"]["levelled_off"] is True
    assert levelled["all_databases_levelled_off"] is True
    assert levelled["platform_tables"]["group_db"]["levelled_off"] is True
    linear = analyse(samples([40 * MIB + i * 4 * MIB for i in range(18)]))
    assert linear["databases"]["group_db"]["levelled_off"] is False
    assert linear["databases"]["group_db"]["last_third_growth"] == 6 * 4 * MIB
    assert linear["all_databases_levelled_off"] is False
    assert linear["platform_tables"]["group_db"]["last_third_growth"] == 6 * MIB


def test_soak_chart_is_a_png(tmp_path: Path) -> None:
    data = samples([40 * MIB + min(i, 6) * MIB for i in range(12)])
    data[-1]["phase"] = "settle"
    report = {
        "samples": data,
        "load": {"completed": 12, "rate": 1.0, "seconds": 120.0},
        "config": {"retention_env": retention_env(60.0)},
    }
    path = tmp_path / "soak.png"
    soak_chart(report, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
