"""Sampling profiles of the running services with py-spy, and their summaries.

``Spy(pids, out_dir).start()`` attaches ``py-spy record --format raw`` (collapsed stacks, one
line per distinct stack with its sample count; idle threads excluded, so samples are CPU
time) to each process; ``stop()`` ends the recordings. :func:`summarize` reads one recording
and answers where the CPU went: by library of the innermost frame (self time: our code,
SQLAlchemy, asyncpg, grpc, protobuf, logging, OpenTelemetry, asyncio, ...), the top self-time
functions, and the top inclusive functions of our own code. The summaries go into the bench
report; the raw files stay beside it (``bench/out/…``) for flame graphs.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Spy", "library_of", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_OURS = ("mppo/", "group_svc/", "payment_svc/", "order_svc/", "notification_svc/", "gateway/")
_LIBRARIES = (
    ("sqlalchemy", "sqlalchemy"),
    ("asyncpg", "asyncpg"),
    ("grpc", "grpc"),
    ("google/protobuf", "protobuf"),
    ("opentelemetry", "opentelemetry"),
    ("nats", "nats-py"),
    ("redis", "redis-py"),
    ("aiohttp", "aiohttp"),
    ("yarl", "aiohttp"),
    ("multidict", "aiohttp"),
    ("logging", "logging"),
    ("json", "json"),
    ("asyncio", "asyncio"),
    ("uvloop", "asyncio"),
    ("jwt", "jwt/crypto"),
    ("cryptography", "jwt/crypto"),
    ("stripe", "provider SDKs"),
    ("razorpay", "provider SDKs"),
    ("alembic", "sqlalchemy"),
    ("uuid", "stdlib other"),
    ("datetime", "stdlib other"),
    ("dataclasses", "stdlib other"),
    ("typing", "stdlib other"),
    ("contextvars", "stdlib other"),
)


def library_of(frame_file: str) -> str:
    """The library a frame's file belongs to (``ours`` for our packages)."""
    path = frame_file.replace("\\", "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    if path.startswith(_OURS) or "/mppo/" in path or "_svc/" in path:
        return "ours" if "_pb2" not in path else "protobuf"
    for prefix, name in _LIBRARIES:
        if path.startswith(prefix) or f"/{prefix}" in path:
            return name
    return "other"


def _frames(stack: str) -> list[tuple[str, str]]:
    found = []
    for part in stack.split(";"):
        match = _FRAME.match(part.strip())
        if match:
            found.append((match.group("func"), match.group("file")))
        else:
            found.append((part.strip(), ""))
    return found


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Where the samples of one py-spy raw recording went."""
    by_library: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    ours_inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        # py-spy prefixes a thread/process frame; the innermost frame is last
        if not frames:
            continue
        total += count
        func, file = frames[-1]
        by_library[library_of(file)] += count
        self_fn[f"{func} ({file})"] += count
        seen: set[str] = set()
        for func, file in frames:
            if library_of(file) == "ours":
                key = f"{func} ({file})"
                if key not in seen:
                    seen.add(key)
                    ours_inclusive[key] += count

    def share(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[k, v, round(100 * v / total, 1)] for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "by_library_self_percent": {
            k: round(100 * v / max(total, 1), 1) for k, v in by_library.most_common()
        },
        "top_self": share(self_fn),
        "top_ours_inclusive": share(ours_inclusive),
    }


class Spy:
    """py-spy recordings of several processes at once."""

    def __init__(self, pids: Mapping[str, int], out_dir: Path, rate: int = 97) -> None:
        self._pids = dict(pids)
        self._out = out_dir
        self._rate = rate
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def paths(self) -> dict[str, Path]:
        return {name: self._out / f"spy-{name}.txt" for name in self._pids}

    def start(self) -> None:
        self._out.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).parent / "py-spy"
        for name, pid in self._pids.items():
            self._procs[name] = subprocess.Popen(
                [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate",
                 str(self._rate), "--nonblocking", "--function",
                 "--output", str(self.paths()[name])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    def stop(self) -> dict[str, dict[str, Any]]:
        for proc in self._procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self._procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return {name: summarize(path) for name, path in self.paths().items() if path.exists()}
