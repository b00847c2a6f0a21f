"""Run the SMTP sink: `python -m notification_svc.smtp_sink` (addresses in the package doc)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web

from mppo.platform.config import ConfigError
from mppo.platform.logs import configure_logging
from notification_svc.smtp_sink.http_api import build_app
from notification_svc.smtp_sink.smtp_server import start_smtp_server
from notification_svc.smtp_sink.store import MessageStore

logger = logging.getLogger("notification_svc.smtp_sink")

DEFAULT_SMTP_ADDR = "127.0.0.1:8025"
DEFAULT_HTTP_ADDR = "127.0.0.1:8026"


def _split(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{name}={value!r} is not host:port")
    return host, int(port)


async def _smtp_server(store: MessageStore) -> asyncio.Server:
    explicit = os.environ.get("MPPO_SMTP_SINK_SMTP_ADDR", "").strip()
    host, port = _split("MPPO_SMTP_SINK_SMTP_ADDR", explicit or DEFAULT_SMTP_ADDR)
    try:
        return await start_smtp_server(store, host, port)
    except OSError:
        if explicit:
            raise
        logger.warning("SMTP port %s is taken; using a free port (see GET /info)", port)
        return await start_smtp_server(store, host, 0)


async def main() -> None:
    """Serve SMTP and HTTP until SIGTERM/SIGINT."""
    http_host, http_port = _split(
        "MPPO_SMTP_SINK_ADDR",
        os.environ.get("MPPO_SMTP_SINK_ADDR", "").strip() or DEFAULT_HTTP_ADDR,
    )
    store = MessageStore()
    smtp = await _smtp_server(store)
    smtp_host, smtp_port = smtp.sockets[0].getsockname()[:2]
    info = {"smtp_addr": f"{smtp_host}:{smtp_port}", "http_addr": f"{http_host}:{http_port}"}
    runner = web.AppRunner(build_app(store, lambda: info), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, http_host, http_port).start()
    logger.info("SMTP sink: SMTP on %s, HTTP on %s", info["smtp_addr"], info["http_addr"])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        smtp.close()
        await smtp.wait_closed()
        await runner.cleanup()
        logger.info("SMTP sink stopped")


if __name__ == "__main__":
    configure_logging("smtp-sink", os.environ.get("MPPO_LOG_LEVEL", "INFO").upper())
    asyncio.run(main())
