"""Run a module under cProfile with a CPU-time clock: ``python -m bench.cpuprofile OUT MODULE``.

``python -m cProfile`` measures wall time, which for asyncio code charges the time a coroutine
waits to whatever resumed it; counting process CPU time instead shows where the CPU goes.
Stats are written to OUT when the module returns or exits (SIGTERM → graceful stop).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
