"""Soak: constant load for minutes with short retention windows; do the stores level off?

``python -m bench.soak --minutes 10 --rate 1.0`` starts its own stack on free loopback ports
with retention windows scaled from ``--window`` (seconds; see :func:`retention_env`), runs
group checkouts open loop at ``--rate`` per second for ``--minutes``, and every
``--sample-seconds`` records:

* each service database's size (``pg_database_size``) and, per database, the size, live and
  dead row counts of ``outbox``, ``inbox``, ``idempotency_keys`` and ``webhook_events``;
* each MPPO stream's bytes and messages;
* checkouts completed and failed so far.

With windows of a minute or two the databases should grow while the first windows fill and
then level off (autovacuum makes the space of pruned rows reusable; Postgres does not give it
back to the OS); the streams should hold about ``max_age`` worth of events. Business records
are never pruned, so a whole database still grows by their size: the summary compares growth
in the first and last thirds of the run for each database, for its platform tables alone, and
for each stream. Writes ``bench/out/soak-<time>.json``
and a matplotlib ``.png`` (and ``soak-latest.*``). ``--attach STATE_DIR`` measures a stack that
is already running, with whatever windows it was started with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient

from bench.charts import soak_chart
from bench.counters import SERVICE_DATABASES, STREAMS
from bench.load import LoadResult, run_load
from bench.progress import Progress
from bench.run import _machine, _phase_report
from bench.stack import RunningStack, attach_stack, start_stack
from mppo.demo import EventTap

__all__ = ["analyse", "main", "retention_env"]

logger = logging.getLogger(__name__)

OUT_DIR = Path(__file__).resolve().parent / "out"
PYTHON_SERVICES = ("group", "payment", "order", "notification")
PLATFORM_TABLES = ("outbox", "inbox", "idempotency_keys", "webhook_events")
MIB = 1 << 20
FLAT_BYTES = 64 << 10


def retention_env(window: float) -> dict[str, str]:
    """Short retention windows for a soak, all scaled from ``window`` seconds.

    Outbox rows and idempotency keys are kept ``window``; streams keep events ``1.5 window``
    with a duplicate window of at most 30 s; the inbox keeps rows ``2.5 window`` (longer than
    both together, as the services insist); webhook records ``2 window``; the pruner runs
    every ``window / 12`` seconds.
    """
    duplicate = min(30.0, window / 4)
    values = {
        "MPPO_RETENTION_OUTBOX_SECONDS": window,
        "MPPO_RETENTION_IDEMPOTENCY_SECONDS": window,
        "MPPO_RETENTION_WEBHOOKS_SECONDS": 2 * window,
        "MPPO_RETENTION_STREAM_MAX_AGE_SECONDS": 1.5 * window,
        "MPPO_RETENTION_DUPLICATE_WINDOW_SECONDS": duplicate,
        "MPPO_RETENTION_INBOX_SECONDS": 2.5 * window,
        "MPPO_RETENTION_INTERVAL_SECONDS": max(1.0, window / 12),
    }
    return {name: f"{value:g}" for name, value in values.items()}


def _db_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{name}"


class Sampler:
    """Reads database, table and stream sizes over kept-open connections."""

    def __init__(self, postgres_server_url: str, nats_url: str) -> None:
        self._server_url = postgres_server_url
        self._nats_url = nats_url
        self._server: asyncpg.Connection | None = None
        self._dbs: dict[str, asyncpg.Connection] = {}
        self._nc: NatsClient | None = None

    async def open(self) -> None:
        self._server = await asyncpg.connect(self._server_url, timeout=10)
        for name in SERVICE_DATABASES:
            self._dbs[name] = await asyncpg.connect(_db_url(self._server_url, name), timeout=10)
        self._nc = await nats.connect(self._nats_url, connect_timeout=5)

    async def close(self) -> None:
        for conn in [self._server, *self._dbs.values()]:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def sample(self) -> dict[str, Any]:
        """One sample: databases, platform tables and streams."""
        if self._server is None or self._nc is None:
            raise RuntimeError("Sampler.open() first")
        rows = await self._server.fetch(
            "SELECT datname, pg_database_size(datname) AS bytes FROM pg_database"
            " WHERE datname = ANY($1::text[])",
            list(SERVICE_DATABASES),
        )
        databases = {str(r["datname"]): int(r["bytes"]) for r in rows}
        tables: dict[str, dict[str, dict[str, int]]] = {}
        for name, conn in self._dbs.items():
            found = await conn.fetch(
                "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes,"
                " coalesce(s.n_live_tup, 0) AS rows, coalesce(s.n_dead_tup, 0) AS dead"
                " FROM pg_class c"
                " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
                " WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'"
                " AND pg_table_is_visible(c.oid)",
                list(PLATFORM_TABLES),
            )
            tables[name] = {
                str(r["relname"]): {
                    "bytes": int(r["bytes"]),
                    "rows": int(r["rows"]),
                    "dead_rows": int(r["dead"]),
                }
                for r in found
            }
        streams: dict[str, dict[str, int]] = {}
        js = self._nc.jetstream()
        for stream in STREAMS:
            with contextlib.suppress(Exception):
                info = await js.stream_info(stream)
                streams[stream] = {
                    "bytes": int(info.state.bytes),
                    "messages": int(info.state.messages),
                }
        return {"databases": databases, "tables": tables, "streams": streams}


def _growth(points: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """Bytes added in the first and the last third of the samples, and whether it levelled."""
    if len(points) < 3:
        return {"start": points[0][1] if points else 0, "end": points[-1][1] if points else 0}
    third = max(1, len(points) // 3)
    first = points[third][1] - points[0][1]
    last = points[-1][1] - points[-1 - third][1]
    return {
        "start": points[0][1],
        "end": points[-1][1],
        "max": max(v for _, v in points),
        "first_third_growth": first,
        "last_third_growth": last,
        # flat (< 64 KiB) or growing at most a quarter as fast as while the windows filled
        "levelled_off": last < FLAT_BYTES or last <= 0.25 * max(first, 1),
    }


def _platform_bytes(sample: Mapping[str, Any], database: str) -> int:
    return sum(t.get("bytes", 0) for t in sample["tables"].get(database, {}).values())


def analyse(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Growth per database (whole, and its platform tables alone) and per stream over the
    loaded samples. Business records (groups, payments, orders, history, notifications) are
    never pruned, so a whole database keeps growing by their size; its platform tables, which
    the pruner bounds, are what must level off."""
    loaded = [s for s in samples if s.get("phase") == "load"] or list(samples)
    databases = sorted({name for s in loaded for name in s["databases"]})
    streams = sorted({name for s in loaded for name in s["streams"]})
    whole = {
        name: _growth([(s["t"], s["databases"].get(name, 0)) for s in loaded]) for name in databases
    }
    platform = {
        name: _growth([(s["t"], _platform_bytes(s, name)) for s in loaded]) for name in databases
    }
    return {
        "databases": whole,
        "platform_tables": platform,
        "streams": {
            name: _growth([(s["t"], s["streams"].get(name, {}).get("bytes", 0)) for s in loaded])
            for name in streams
        },
        "all_databases_levelled_off": bool(databases)
        and all(g.get("levelled_off", False) for g in whole.values()),
        "all_platform_tables_levelled_off": bool(databases)
        and all(g.get("levelled_off", False) for g in platform.values()),
    }


async def soak(args: argparse.Namespace, stack: RunningStack) -> dict[str, Any]:
    """Run the load and the sampler side by side; the report."""
    tap = EventTap(stack.nats_url)
    await tap.start()
    sampler = Sampler(stack.extra["postgres"], stack.nats_url)
    await sampler.open()
    samples: list[dict[str, Any]] = []
    live: list[LoadResult] = []
    phase = "load"
    began = time.perf_counter()

    def seen(result: LoadResult) -> None:
        if not live:
            live.append(result)
        bar.update(result)

    async def take() -> None:
        sample = await sampler.sample()
        result = live[0] if live else None
        sample.update(
            t=round(time.perf_counter() - began, 2),
            phase=phase,
            completed=result.completed if result else 0,
            failed=sum(result.errors.values()) if result else 0,
        )
        samples.append(sample)
        if result is not None:  # keep the generator's own memory flat over a long run
            for checkout in result.checkouts:
                tap.events.pop(checkout.group_id, None)
            result.checkouts.clear()

    async def sample_forever() -> None:
        while True:
            try:
                await take()
            except Exception as exc:  # a missed sample is reported, the run goes on
                logger.warning("sample failed: %r", exc)
            await asyncio.sleep(args.sample_seconds)

    seconds = args.minutes * 60
    groups = max(1, int(args.rate * seconds))
    bar = Progress(f"soak {args.rate:g}/s", groups)
    sampling = asyncio.create_task(sample_forever())
    try:
        result = await run_load(
            stack.gateway_url, stack.state_dir, tap, groups=groups, members=args.members - 1,
            rate=args.rate, max_seconds=seconds, progress=seen,
        )  # fmt: skip
        bar.close()
        phase = "settle"
        await asyncio.sleep(args.settle_seconds)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        await take()
    finally:
        sampling.cancel()
        await sampler.close()
        await tap.stop()
    return {
        "load": {**_phase_report(result), "rate": args.rate},
        "samples": samples,
        "summary": analyse(samples),
    }


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """A human summary of a soak report."""
    load = report["load"]
    lines = [
        f"load: {load['completed']}/{load['started']} checkouts at {load['rate']}/s over "
        f"{load['seconds']} s, errors {sum(load['errors'].values())}",
        "database            start MB    end MB   first third   last third   levelled",
    ]
    for name, g in report["summary"]["databases"].items():
        lines.append(
            f"  {name:<16} {g['start'] / MIB:>9.1f} {g['end'] / MIB:>9.1f}"
            f" {g.get('first_third_growth', 0) / MIB:>10.2f} MB"
            f" {g.get('last_third_growth', 0) / MIB:>9.2f} MB   {g.get('levelled_off', '?')}"
        )
    lines.append("platform tables     start MB    end MB   first third   last third   levelled")
    for name, g in report["summary"]["platform_tables"].items():
        lines.append(
            f"  {name:<16} {g['start'] / MIB:>9.2f} {g['end'] / MIB:>9.2f}"
            f" {g.get('first_third_growth', 0) / MIB:>10.2f} MB"
            f" {g.get('last_third_growth', 0) / MIB:>9.2f} MB   {g.get('levelled_off', '?')}"
        )
    for name, g in report["summary"]["streams"].items():
        lines.append(
            f"  stream {name:<12} {g['start'] / MIB:>6.1f} -> {g['end'] / MIB:.1f} MB"
            f" (levelled: {g.get('levelled_off', '?')})"
        )
    return lines


def _write_outputs(report: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"soak-{stamp}.json"
    text = json.dumps(report, indent=2) + "\n"
    json_path.write_text(text)
    (out_dir / "soak-latest.json").write_text(text)
    png_path = json_path.with_suffix(".png")
    soak_chart(report, png_path)
    (out_dir / "soak-latest.png").write_bytes(png_path.read_bytes())
    return json_path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=1.0, help="checkouts started per second")
    parser.add_argument("--members", type=int, default=4, help="members per group, host incl.")
    parser.add_argument(
        "--window", type=float, default=60.0, help="own stack: base retention window (seconds)"
    )
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="between samples")
    parser.add_argument(
        "--settle-seconds", type=float, default=0.0, help="keep sampling this long after the load"
    )
    parser.add_argument("--attach", metavar="STATE_DIR", help="use the stack running from there")
    parser.add_argument("--no-fsync", action="store_true", help="own stack: Postgres w/o fsync")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where JSON and PNG go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    env = retention_env(args.window)
    if args.attach:
        stack = attach_stack(Path(args.attach))
        if stack is None:
            sys.stderr.write(f"no running stack in {args.attach}\n")
            return 2
        env = {}
    else:
        state = Path(tempfile.mkdtemp(prefix="mppo-soak-"))
        sys.stderr.write(f"starting a stack under {state} with retention {env}\n")
        stack = start_stack(
            state,
            fsync=not args.no_fsync,
            extra_env={name: env for name in PYTHON_SERVICES},
        )
    recorded = json.loads((stack.state_dir / "devstack.json").read_text())
    stack.extra["postgres"] = recorded["endpoints"]["postgres"]
    try:
        import uvloop

        report = uvloop.run(soak(args, stack))
    finally:
        stack.stop()
        if stack.owned:
            shutil.rmtree(stack.state_dir, ignore_errors=True)
    report["config"] = {
        "minutes": args.minutes,
        "rate": args.rate,
        "members": args.members,
        "sample_seconds": args.sample_seconds,
        "settle_seconds": args.settle_seconds,
        "own_stack": not args.attach,
        "retention_env": env if env else "as the attached stack was started",
        "postgres_fsync": (not args.no_fsync) if not args.attach else "as running",
    }
    report["command"] = "python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    report["machine"] = _machine()
    path = _write_outputs(report, args.out)
    for line in summary_lines(report):
        sys.stderr.write(line + "\n")
    sys.stderr.write(f"report: {path} (+ .png)\n")
    return 0 if report["load"]["completed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
