"""Run the sandbox merchant: `python -m order_svc.sandbox_merchant`.

Environment: ``MPPO_MERCHANT_ADDR`` (listen ``host:port``, default ``127.0.0.1:8091``),
``MPPO_MERCHANT_SECRET`` (shared signing secret, default ``sandbox-merchant-secret``),
``MPPO_MERCHANT_STATE_FILE`` (persist state there; in memory when unset),
``MPPO_MERCHANT_CATALOGUE`` (JSON catalogue file; the default catalogue otherwise),
``MPPO_MERCHANT_CONTROL`` (``0`` disables the ``/_control`` endpoints), ``MPPO_LOG_LEVEL``.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from mppo.platform.logs import configure_logging
from order_svc.config import DEFAULT_MERCHANT_ADDR, DEFAULT_MERCHANT_SECRET
from order_svc.sandbox_merchant.app import create_app


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    configure_logging("sandbox-merchant", os.environ.get("MPPO_LOG_LEVEL", "INFO").upper())
    addr = os.environ.get("MPPO_MERCHANT_ADDR", "").strip() or DEFAULT_MERCHANT_ADDR
    host, _, port = addr.rpartition(":")
    state_file = os.environ.get("MPPO_MERCHANT_STATE_FILE", "").strip()
    app = create_app(
        secret=(
            os.environ.get("MPPO_MERCHANT_SECRET", "").strip() or DEFAULT_MERCHANT_SECRET
        ).encode(),
        state_file=Path(state_file) if state_file else None,
        catalogue_file=os.environ.get("MPPO_MERCHANT_CATALOGUE", "").strip() or None,
        control=os.environ.get("MPPO_MERCHANT_CONTROL", "1") != "0",
    )
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
