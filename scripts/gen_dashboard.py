"""Generate the Grafana dashboard from its code (mppo/observability/dashboard.py).

python scripts/gen_dashboard.py          # write deploy/grafana/mppo-overview.json
python scripts/gen_dashboard.py --check  # fail if the committed file differs (stale)
"""

from __future__ import annotations

import argparse
import sys

from mppo.observability.dashboard import DASHBOARD_FILE, render


def main(argv: list[str] | None = None) -> int:
    """Write or check the dashboard JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    fresh = render()
    if args.check:
        current = DASHBOARD_FILE.read_text() if DASHBOARD_FILE.exists() else ""
        if current != fresh:
            sys.stderr.write(
                f"{DASHBOARD_FILE} is stale: run `make dashboard` (scripts/gen_dashboard.py)\n"
            )
            return 1
        return 0
    DASHBOARD_FILE.write_text(fresh)
    sys.stdout.write(f"wrote {DASHBOARD_FILE}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
