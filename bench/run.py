"""The benchmark: load phase at full speed, raw ceiling, load at half that rate; one report.

``python -m bench --groups 200`` starts its own stack on free loopback ports (or ``--attach``
to the stack of a state dir), then:

1. warm-up checkouts (not counted);
2. **max**: ``--groups`` checkouts with ``--concurrency`` in flight; throughput, latency of
   every step, errors, CPU per process, and the Postgres transactions / JetStream messages a
   checkout costs;
3. **reference**: the fixed reference checkout of four (``bench/reference.py``: 30 business
   transactions and 20 acknowledged publishes with their consumes) at the same concurrency on
   the same servers — a ceiling that does not move with the code;
4. **replay ceiling**: the bare transactions and publishes the code does now per checkout at
   the same concurrency (``bench/ceiling.py``);
5. **half rate**: open loop at half the measured max rate; p99 of last payment →
   ``order.confirmed``.

Both ratios are reported: to the fixed reference (progress when work is removed) and to the
replay (how much of its own storage/messaging cost the code reaches). Writes
``bench/out/bench-<time>.json`` and a matplotlib ``.png`` (and ``latest.*``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.ceiling import measure_ceiling
from bench.charts import run_chart
from bench.counters import read_counters, webhook_received_at
from bench.load import STEP_LAST_PAY_TO_CONFIRMED, LoadResult, run_load
from bench.procstat import cpu_snapshot
from bench.progress import Progress
from bench.reference import measure_reference
from bench.spy import Spy
from bench.stack import RunningStack, attach_stack, start_stack
from mppo.demo import EventTap

logger = logging.getLogger(__name__)

OUT_DIR = Path(__file__).resolve().parent / "out"
STEP_WEBHOOK = "webhook -> member.paid"
TARGET_RATIO = 0.5
MILESTONE_RATIO = 0.25
TARGET_CPU_MS = 100.0
PYTHON_SERVICES = ("group", "payment", "order", "notification", "gateway")
TARGET_P99_MS = 100.0


def _service_of(process: str) -> str:
    """The Python service a process is (``payment-2`` is a replica of payment), or ""."""
    base, _, suffix = process.rpartition("-")
    name = base if suffix.isdigit() else process
    return name if name in PYTHON_SERVICES else ""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def latency_table(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    table = {}
    for step, values in samples.items():
        ms = [v * 1000 for v in values]
        table[step] = {
            "count": len(ms),
            "p50": round(percentile(ms, 50), 2),
            "p95": round(percentile(ms, 95), 2),
            "p99": round(percentile(ms, 99), 2),
            "max": round(max(ms), 2) if ms else 0.0,
            "mean": round(sum(ms) / len(ms), 2) if ms else 0.0,
        }
    return table


async def _webhook_samples(stack_pg: str, tap: EventTap, result: LoadResult) -> list[float]:
    received = await webhook_received_at(stack_pg)
    samples = []
    for checkout in result.checkouts:
        for event in tap.events.get(checkout.group_id, []):
            if event.subject == "member.paid" and event.payment_id in received:
                samples.append(event.stored_at - received[event.payment_id].timestamp())
    return samples


def _phase_report(result: LoadResult) -> dict[str, Any]:
    return {
        "started": result.started,
        "completed": result.completed,
        "failed": result.started - result.completed,
        "seconds": round(result.seconds, 3),
        "groups_per_second": round(result.groups_per_second, 3),
        "errors": dict(result.errors),
        "latency_ms": latency_table(result.samples),
    }


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


async def benchmark(args: argparse.Namespace, stack: RunningStack) -> dict[str, Any]:
    pg = stack.extra["postgres"]
    tap = EventTap(stack.nats_url)
    await tap.start()
    members = args.members - 1
    try:
        if args.warmup:
            await run_load(
                stack.gateway_url, stack.state_dir, tap, groups=args.warmup, members=members,
                concurrency=min(args.concurrency, args.warmup),
            )  # fmt: skip
        await asyncio.sleep(1.0)
        before = await read_counters(pg, stack.nats_url)
        spy = None
        if args.spy:
            wanted = {n: stack.pids[n] for n in args.spy.split(",") if n in stack.pids}
            spy = Spy(wanted, args.out)
            spy.start()
            await asyncio.sleep(1.0)  # py-spy attached before the load starts
        cpu_before = cpu_snapshot(stack.pids)
        bar = Progress("max", args.groups)
        peak = await run_load(
            stack.gateway_url, stack.state_dir, tap, groups=args.groups, members=members,
            concurrency=args.concurrency, max_seconds=args.max_seconds,
            progress=bar.update,
        )  # fmt: skip
        bar.close()
        cpu_after = cpu_snapshot(stack.pids)
        profiles = spy.stop() if spy is not None else {}
        await asyncio.sleep(1.5)  # notifications after the confirmation; stats flush
        after = await read_counters(pg, stack.nats_url)
        peak.samples[STEP_WEBHOOK] = await _webhook_samples(pg, tap, peak)
        cost = after.minus(before)
        done = max(1, peak.completed)
        txns_per_checkout = round(sum(cost.xact_commit.values()) / done, 2)
        publishes_per_checkout = round(sum(cost.stream_messages.values()) / done, 2)
        per_checkout = {
            "transactions": txns_per_checkout,
            "publishes": publishes_per_checkout,
            "outbox_rows": round(sum(cost.outbox_rows.values()) / done, 2),
            "inbox_rows": round(sum(cost.inbox_rows.values()) / done, 2),
            "transactions_by_db": {k: round(v / done, 2) for k, v in cost.xact_commit.items()},
            "publishes_by_stream": {k: round(v / done, 2) for k, v in cost.stream_messages.items()},
        }
        cpu = {
            name: {
                "cpu_seconds": round(cpu_after[name] - cpu_before.get(name, 0.0), 3),
                "percent_of_one_core": round(
                    100 * (cpu_after[name] - cpu_before.get(name, 0.0)) / max(peak.seconds, 1e-9),
                    1,
                ),
                "cpu_ms_per_checkout": round(
                    1000 * (cpu_after[name] - cpu_before.get(name, 0.0)) / done, 2
                ),
            }
            for name in cpu_after
        }
        bar = Progress("reference", args.groups)
        reference = await measure_reference(
            pg, stack.nats_url, groups=args.groups, concurrency=args.concurrency,
            progress=bar.update_count,
        )  # fmt: skip
        bar.close()
        bar = Progress("ceiling", args.groups)
        ceiling = await measure_ceiling(
            pg, stack.nats_url, groups=args.groups,
            transactions_per_group=txns_per_checkout,
            publishes_per_group=publishes_per_checkout,
            concurrency=args.concurrency, progress=bar.update_count,
        )  # fmt: skip
        bar.close()
        ratio = peak.groups_per_second / ceiling.groups_per_second
        ratio_reference = peak.groups_per_second / reference.groups_per_second
        python_cpu_ms = round(
            sum(v["cpu_ms_per_checkout"] for name, v in cpu.items() if _service_of(name)), 2
        )
        report: dict[str, Any] = {
            "max": {
                **_phase_report(peak),
                "concurrency": args.concurrency,
                "per_checkout": per_checkout,
                "cpu": cpu,
            },
            "ceiling": {
                "groups": ceiling.groups,
                "transactions_per_group": ceiling.transactions_per_group,
                "publishes_per_group": ceiling.publishes_per_group,
                "concurrency": ceiling.concurrency,
                "seconds": round(ceiling.seconds, 3),
                "groups_per_second": round(ceiling.groups_per_second, 3),
            },
            "reference": {
                "groups": reference.groups,
                "transactions_per_group": reference.transactions_per_group,
                "publishes_per_group": reference.publishes_per_group,
                "concurrency": reference.concurrency,
                "seconds": round(reference.seconds, 3),
                "groups_per_second": round(reference.groups_per_second, 3),
            },
            "ratio_to_ceiling": round(ratio, 4),
            "ratio_to_reference": round(ratio_reference, 4),
            "ratios": {
                "to fixed reference": round(ratio_reference, 4),
                "to replay": round(ratio, 4),
            },
            "python_cpu_ms_per_checkout": python_cpu_ms,
        }
        if profiles:
            report["profiles"] = profiles
        if args.half_rate_groups:
            rate = peak.groups_per_second / 2
            bar = Progress(f"half rate {rate:.1f}/s", args.half_rate_groups)
            half = await run_load(
                stack.gateway_url, stack.state_dir, tap, groups=args.half_rate_groups,
                members=members, rate=rate, max_seconds=args.max_seconds,
                progress=bar.update,
            )  # fmt: skip
            bar.close()
            half.samples[STEP_WEBHOOK] = await _webhook_samples(pg, tap, half)
            report["half_rate"] = {"rate": round(rate, 3), **_phase_report(half)}
        p99 = (
            report.get("half_rate", report["max"])["latency_ms"]
            .get(STEP_LAST_PAY_TO_CONFIRMED, {})
            .get("p99", 0.0)
        )
        report["targets"] = {
            "ratio_to_reference_at_least": TARGET_RATIO,
            "ratio_to_reference_met": ratio_reference >= TARGET_RATIO,
            "ratio_to_reference_milestone": MILESTONE_RATIO,
            "ratio_to_reference_milestone_met": ratio_reference >= MILESTONE_RATIO,
            "python_cpu_ms_per_checkout_at_most": TARGET_CPU_MS,
            "python_cpu_met": python_cpu_ms <= TARGET_CPU_MS,
            "ratio_to_ceiling_at_least": TARGET_RATIO,
            "ratio_met": ratio >= TARGET_RATIO,
            "p99_last_payment_to_confirmed_ms_at_most": TARGET_P99_MS,
            "p99_measured_ms": p99,
            "p99_met": 0 < p99 <= TARGET_P99_MS,
        }
        return report
    finally:
        await tap.stop()


def _write_outputs(report: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"bench-{stamp}.json"
    text = json.dumps(report, indent=2) + "\n"
    json_path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    png_path = json_path.with_suffix(".png")
    run_chart(report, png_path)
    (out_dir / "latest.png").write_bytes(png_path.read_bytes())
    return json_path


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A human summary of a report."""
    peak, ceiling, targets = report["max"], report["ceiling"], report["targets"]
    reference = report["reference"]
    lines = [
        f"max: {peak['completed']}/{peak['started']} checkouts in {peak['seconds']} s = "
        f"{peak['groups_per_second']} groups/s (concurrency {peak['concurrency']}),"
        f" errors {sum(peak['errors'].values())}",
        f"fixed reference: {reference['groups_per_second']} groups/s "
        f"({reference['transactions_per_group']} txns + {reference['publishes_per_group']}"
        f" publishes+consumes per checkout); ratio {report['ratio_to_reference']:.3f}"
        f" (milestone {targets['ratio_to_reference_milestone']}, target"
        f" >= {targets['ratio_to_reference_at_least']}:"
        f" {'met' if targets['ratio_to_reference_met'] else 'NOT met'})",
        f"python CPU per checkout: {report['python_cpu_ms_per_checkout']} ms (target <="
        f" {targets['python_cpu_ms_per_checkout_at_most']}:"
        f" {'met' if targets['python_cpu_met'] else 'NOT met'})",
        f"ceiling: {ceiling['groups_per_second']} groups/s ({ceiling['transactions_per_group']}"
        f" txns + {ceiling['publishes_per_group']} publishes per checkout); ratio "
        f"{report['ratio_to_ceiling']:.3f} (target >= {targets['ratio_to_ceiling_at_least']}:"
        f" {'met' if targets['ratio_met'] else 'NOT met'})",
        f"p99 last payment -> order.confirmed: {targets['p99_measured_ms']} ms (target <= "
        f"{targets['p99_last_payment_to_confirmed_ms_at_most']}:"
        f" {'met' if targets['p99_met'] else 'NOT met'})",
    ]
    for phase in ("max", "half_rate"):
        if phase not in report:
            continue
        lines.append(f"{phase} latency (ms)          count     p50     p95     p99")
        for step, v in report[phase]["latency_ms"].items():
            lines.append(f"  {step:<38} {v['count']:>5} {v['p50']:>7} {v['p95']:>7} {v['p99']:>7}")
    lines.append("cpu (max phase)          cpu s   % core   ms/checkout")
    for name, v in peak["cpu"].items():
        lines.append(
            f"  {name:<22} {v['cpu_seconds']:>6} {v['percent_of_one_core']:>7}"
            f" {v['cpu_ms_per_checkout']:>9}"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=200, help="checkouts in the max phase")
    parser.add_argument("--members", type=int, default=4, help="members per group, host incl.")
    parser.add_argument("--concurrency", type=int, default=8, help="checkouts in flight")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted checkouts first")
    parser.add_argument(
        "--half-rate-groups", type=int, default=None, help="checkouts at half rate (groups/2)"
    )
    parser.add_argument("--max-seconds", type=float, default=600, help="bound per phase")
    parser.add_argument("--attach", metavar="STATE_DIR", help="use the stack running from there")
    parser.add_argument("--no-fsync", action="store_true", help="own stack: Postgres w/o fsync")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="own stack: copies of every service and of the gateway (mppo dev up --replicas)",
    )
    parser.add_argument(
        "--profile", default="", help="own stack: comma-separated services to run under cProfile"
    )
    parser.add_argument(
        "--spy",
        default="",
        help="comma-separated processes to sample with py-spy during the max phase (as root)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where JSON and PNG go")
    args = parser.parse_args(argv)
    if args.half_rate_groups is None:
        args.half_rate_groups = max(1, args.groups // 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.attach:
        stack = attach_stack(Path(args.attach))
        if stack is None:
            sys.stderr.write(f"no running stack in {args.attach}\n")
            return 2
    else:
        state = Path(tempfile.mkdtemp(prefix="mppo-bench-"))
        profile = {
            name: args.out / f"profile-{name}.prof" for name in args.profile.split(",") if name
        }
        args.out.mkdir(parents=True, exist_ok=True)
        sys.stderr.write(f"starting a stack under {state}\n")
        stack = start_stack(state, fsync=not args.no_fsync, profile=profile, replicas=args.replicas)
    recorded = json.loads((stack.state_dir / "devstack.json").read_text())
    stack.extra["postgres"] = recorded["endpoints"]["postgres"]
    try:
        import uvloop

        report = uvloop.run(benchmark(args, stack))
    finally:
        stack.stop()
        if stack.owned:
            shutil.rmtree(stack.state_dir, ignore_errors=True)
    report["config"] = {
        "groups": args.groups,
        "members": args.members,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "half_rate_groups": args.half_rate_groups,
        "own_stack": not args.attach,
        "replicas": args.replicas if not args.attach else "as running",
        "postgres_fsync": (not args.no_fsync) if not args.attach else "as running",
    }
    report["command"] = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    report["machine"] = _machine()
    path = _write_outputs(report, args.out)
    for line in summary_lines(report):
        sys.stderr.write(line + "\n")
    sys.stderr.write(f"report: {path} (+ .png)\n")
    return 0 if report["max"]["completed"] > 0 else 1
