"""CPU time of processes from ``/proc/<pid>/stat`` (Linux), children included for servers such
as Postgres that fork a backend per connection."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["cpu_seconds", "cpu_snapshot"]

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name may hold spaces: fields start after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """User+system CPU seconds of ``pid``, plus its reaped children's and (recursively) its
    live children's when ``with_children``."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # fields here start at index 2 of the man page: utime=13, stime=14, cutime=15, cstime=16
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
        total = ticks / _TICKS
        for child in _children(pid):
            total += cpu_seconds(child, with_children=True)
        return total
    return ticks / _TICKS


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds per named process (the current process as ``bench``)."""
    snap = {name: cpu_seconds(pid) for name, pid in pids.items()}
    snap["bench (load generator)"] = cpu_seconds(os.getpid(), with_children=False)
    return snap
