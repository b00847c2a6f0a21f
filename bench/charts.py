"""Charts of benchmark reports, drawn with matplotlib (a dev extra; Agg backend, no display).

* :func:`run_chart` — one run: throughput against both ceilings (the fixed reference checkout
  and the replay of what the code does), and latency percentiles per step for the max and
  half-rate phases.
* :func:`cpu_chart` — CPU ms per checkout per process, for several labelled runs side by side
  (before/after a change).
* :func:`soak_chart` — a soak (``bench/soak.py``) over time: service database sizes, the
  platform tables the pruner keeps bounded (bytes and live rows), and stream bytes.

``python -m bench.charts BEFORE.json AFTER.json [...] --labels before,after --out cpu.png``
draws the CPU comparison of recorded reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["cpu_chart", "run_chart", "soak_chart"]

Report = Mapping[str, Any]


def run_chart(report: Report, path: Path) -> None:
    """Throughput vs ceilings (left) and latency per step (right) of one run."""
    peak = report["max"]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [1, 2.4]}
    )
    bars = {"measured (max)": peak["groups_per_second"]}
    if "reference" in report:
        bars["fixed reference\nceiling"] = report["reference"]["groups_per_second"]
    bars["replay ceiling\n(what the code does)"] = report["ceiling"]["groups_per_second"]
    if "half_rate" in report:
        bars["half rate\n(offered)"] = report["half_rate"]["rate"]
    colors = ["#2b6cb0", "#718096", "#a0aec0", "#68d391"][: len(bars)]
    left.bar(list(bars), list(bars.values()), color=colors)
    for x, value in enumerate(bars.values()):
        left.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=9)
    left.set_ylabel("group checkouts / s")
    ratios = [f"{k}: {v:.3f}" for k, v in report.get("ratios", {}).items()]
    left.set_title("throughput\n" + "; ".join(ratios), fontsize=9)
    left.tick_params(axis="x", labelsize=8, labelrotation=25)

    rows: list[tuple[str, Mapping[str, float]]] = [
        (f"max · {step}", values) for step, values in peak["latency_ms"].items()
    ]
    if "half_rate" in report:
        rows += [
            (f"half · {step}", values) for step, values in report["half_rate"]["latency_ms"].items()
        ]
    labels = [label for label, _ in rows]
    positions = list(range(len(rows)))
    height = 0.27
    for offset, (key, color) in enumerate(
        (("p50", "#63b3ed"), ("p95", "#ed8936"), ("p99", "#e53e3e"))
    ):
        right.barh(
            [p + (offset - 1) * height for p in positions],
            [values.get(key, 0.0) for _, values in rows],
            height=height,
            color=color,
            label=key,
        )
    right.set_yticks(positions, labels, fontsize=8)
    right.invert_yaxis()
    right.set_xscale("symlog", linthresh=10)
    right.set_xlabel("ms (symlog)")
    right.legend(loc="lower right")
    config = report.get("config", {})
    fig.suptitle(
        f"MPPO bench: {peak['completed']} checkouts of {config.get('members', '?')}, "
        f"concurrency {peak.get('concurrency', '?')}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_chart(reports: Sequence[Report], labels: Sequence[str], path: Path) -> None:
    """CPU ms per checkout per process (max phase), one bar per run for each process."""
    names: list[str] = []
    for report in reports:
        for name in report["max"]["cpu"]:
            if name not in names:
                names.append(name)
    names.sort(key=lambda n: -max(r["max"]["cpu"].get(n, {}).get("cpu_ms_per_checkout", 0.0)
                                  for r in reports))  # fmt: skip
    fig, axis = plt.subplots(figsize=(13, 6))
    width = 0.8 / max(1, len(reports))
    for index, (report, label) in enumerate(zip(reports, labels, strict=True)):
        cpu = report["max"]["cpu"]
        values = [cpu.get(name, {}).get("cpu_ms_per_checkout", 0.0) for name in names]
        xs = [i + (index - (len(reports) - 1) / 2) * width for i in range(len(names))]
        total = sum(values)
        axis.bar(xs, values, width=width, label=f"{label} (all processes {total:.0f} ms)")
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_ylabel("CPU ms per checkout (max phase)")
    axis.set_title("CPU per checkout by process")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak_chart(report: Report, path: Path) -> None:
    """Database sizes, platform table sizes and stream bytes over a soak, in MB against
    minutes; the settle phase after the load (if any) is shaded."""
    samples = report["samples"]
    minutes = [s["t"] / 60 for s in samples]
    mb = 1 << 20
    fig, ((dbs, tables), (rows, streams)) = plt.subplots(2, 2, figsize=(16, 10))
    for name in sorted({n for s in samples for n in s["databases"]}):
        dbs.plot(minutes, [s["databases"].get(name, 0) / mb for s in samples], label=name)
    dbs.set_title("service databases (pg_database_size)")
    table_names = sorted({t for s in samples for db in s["tables"].values() for t in db})
    for table in table_names:
        totals = [
            sum(db.get(table, {}).get("bytes", 0) for db in s["tables"].values()) / mb
            for s in samples
        ]
        tables.plot(minutes, totals, label=table)
    tables.set_title("platform tables, all databases (with indexes)")
    for table in table_names:
        live = [
            sum(db.get(table, {}).get("rows", 0) for db in s["tables"].values()) for s in samples
        ]
        rows.plot(minutes, live, label=table)
    rows.set_title("platform tables: live rows, all databases (pruned past their windows)")
    for name in sorted({n for s in samples for n in s["streams"]}):
        streams.plot(
            minutes, [s["streams"].get(name, {}).get("bytes", 0) / mb for s in samples], label=name
        )
    streams.set_title("JetStream streams (bytes)")
    settle = [m for m, s in zip(minutes, samples, strict=True) if s.get("phase") == "settle"]
    for axis in (dbs, tables, rows, streams):
        if settle:
            axis.axvspan(min(settle), max(settle), color="#edf2f7", label="after the load")
        axis.set_xlabel("minutes")
        axis.set_ylabel("rows" if axis is rows else "MB")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
    load = report["load"]
    windows = report.get("config", {}).get("retention_env", {})
    short = (
        ", ".join(f"{k.removeprefix('MPPO_RETENTION_').lower()}={v}" for k, v in windows.items())
        if isinstance(windows, dict)
        else str(windows)
    )
    fig.suptitle(
        f"MPPO soak: {load['completed']} checkouts at {load['rate']}/s over "
        f"{load['seconds'] / 60:.1f} min\n{short}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    parser.add_argument("reports", nargs="+", type=Path, help="bench JSON reports")
    parser.add_argument("--labels", default="", help="comma-separated, one per report")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    loaded = [json.loads(p.read_text()) for p in args.reports]
    labels = args.labels.split(",") if args.labels else [p.stem for p in args.reports]
    if len(labels) != len(loaded):
        sys.stderr.write("--labels needs one label per report\n")
        return 2
    cpu_chart(loaded, labels, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
