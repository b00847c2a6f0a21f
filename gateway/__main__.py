"""`python -m gateway`: serve the REST API on MPPO_GATEWAY_ADDR until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.app import build_app, describe
from gateway.config import GatewayConfig
from mppo.platform.config import ConfigError
from mppo.platform.logs import configure_logging
from mppo.platform.metrics import metrics_addr, serve_metrics
from mppo.platform.telemetry import configure_tracing, instrument_libraries

logger = logging.getLogger("gateway")


async def serve(config: GatewayConfig) -> None:
    """Run the gateway until a stop signal arrives."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    logger.info("gateway serving %s", describe(config))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("gateway stopping")
    await runner.cleanup()
    logger.info("gateway stopped")


def main() -> int:
    """Entry point."""
    try:
        config = GatewayConfig.from_env()
        addr = metrics_addr(os.environ, "gateway")
    except ConfigError as exc:
        configure_logging("gateway")
        logger.error("gateway cannot start: %s", exc)
        return 2
    configure_logging("gateway", config.log_level)
    configure_tracing("gateway")
    instrument_libraries()
    served = serve_metrics(addr, "gateway")
    try:
        import uvloop

        runner: Callable[..., None] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(serve(config))
    finally:
        if served is not None:
            served.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
