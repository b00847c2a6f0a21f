"""Postgres + Redis + NATS JetStream: embedded ones, or the servers named by env URLs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mppo.devstack.nats_server import EmbeddedNats, EmbeddedNatsCluster
from mppo.devstack.postgres import EmbeddedPostgres, create_database, database_url, remove_data
from mppo.devstack.probes import free_port
from mppo.devstack.process import ManagedProcess, ProcessExitedError, ProcessSpec, Supervisor
from mppo.devstack.redis_server import EmbeddedRedis

__all__ = [
    "DEV_PORTS",
    "ENV_NATS_URL",
    "ENV_POSTGRES_URL",
    "ENV_REDIS_URL",
    "FREE_PORTS",
    "Infra",
    "InfraPorts",
    "start_infra",
]

_log = logging.getLogger("mppo.devstack")

ENV_POSTGRES_URL = "MPPO_POSTGRES_URL"
ENV_REDIS_URL = "MPPO_REDIS_URL"
ENV_NATS_URL = "MPPO_NATS_URL"

_PORT_ATTEMPTS = 4


@dataclass(frozen=True)
class InfraPorts:
    """Ports for the embedded servers; 0 picks a free port."""

    postgres: int = 5432
    redis: int = 6379
    nats: int = 4222


DEV_PORTS = InfraPorts()
FREE_PORTS = InfraPorts(0, 0, 0)


class Infra:
    """Running infrastructure: URLs, database creation, stop."""

    def __init__(
        self,
        state_dir: Path,
        supervisor: Supervisor,
        postgres_server_url: str,
        redis_url: str,
        nats_url: str,
        *,
        embedded: frozenset[str],
        ephemeral: bool,
    ) -> None:
        self.state_dir = state_dir
        self.supervisor = supervisor
        self.postgres_server_url = postgres_server_url
        """URL of the maintenance database (``.../postgres``)."""
        self.redis_url = redis_url
        self.nats_url = nats_url
        self.embedded = embedded
        """Which of ``postgres``, ``redis``, ``nats`` we started ourselves."""
        self.ephemeral = ephemeral
        self.startup_seconds = 0.0
        """Wall time :func:`start_infra` took."""

    def postgres_url(self, dbname: str) -> str:
        """``postgresql://`` URL of database ``dbname`` on the server."""
        return database_url(self.postgres_server_url, dbname)

    async def create_database(self, name: str) -> str:
        """Create ``name`` if missing (idempotent); returns its URL."""
        return await create_database(self.postgres_server_url, name)

    def endpoints(self) -> dict[str, str]:
        return {
            "postgres": self.postgres_server_url,
            "redis": self.redis_url,
            "nats": self.nats_url,
        }

    @property
    def processes(self) -> list[ManagedProcess]:
        return self.supervisor.processes

    async def stop(self) -> None:
        """Stop what we started; an ephemeral stack also loses its data."""
        await self.supervisor.stop_all()
        if self.ephemeral:
            remove_data(self.state_dir)
            for sub in ("redis", "nats"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)


async def _start_with_port_retry(
    supervisor: Supervisor, wanted: int, make_spec: Callable[[int], ProcessSpec]
) -> int:
    """Start the process built by ``make_spec(port)``; retry other ports if ``wanted`` is 0."""
    attempts = _PORT_ATTEMPTS if wanted == 0 else 1
    for attempt in range(attempts):
        port = wanted or free_port()
        try:
            await supervisor.start(make_spec(port))
        except ProcessExitedError as exc:
            if attempt + 1 == attempts:
                raise
            _log.info("%s failed on port %d (%s); retrying", exc.name, port, exc.returncode)
            continue
        return port
    raise AssertionError("unreachable")  # pragma: no cover


async def start_infra(
    state_dir: Path,
    *,
    ports: InfraPorts = DEV_PORTS,
    fsync: bool = True,
    ephemeral: bool = False,
    env: Mapping[str, str] | None = None,
    supervisor: Supervisor | None = None,
    nats_cluster: int = 1,
) -> Infra:
    """Start the servers not given by ``MPPO_POSTGRES_URL``/``MPPO_REDIS_URL``/``MPPO_NATS_URL``.

    ``state_dir`` holds data and logs. ``fsync=False`` is for tests only. ``ephemeral`` wipes
    the data on :meth:`Infra.stop` and keeps no Redis append-only file. ``nats_cluster`` > 1
    starts that many nats-servers as one JetStream cluster (processes ``nats-1`` …, the first
    on ``ports.nats``); the NATS URL then lists every node, comma-separated.
    """
    started = time.monotonic()
    env = os.environ if env is None else env
    state_dir = await asyncio.to_thread(state_dir.resolve)
    sup = supervisor or Supervisor(state_dir / "logs")
    embedded: set[str] = set()
    urls = {
        "postgres": env.get(ENV_POSTGRES_URL, ""),
        "redis": env.get(ENV_REDIS_URL, ""),
        "nats": env.get(ENV_NATS_URL, ""),
    }

    async def start_postgres() -> str:
        pg = EmbeddedPostgres(state_dir, ports.postgres, fsync=fsync)
        await asyncio.to_thread(pg.initdb)  # also finds binaries and the data directory

        def spec(port: int) -> ProcessSpec:
            pg.port = port
            return pg.spec()

        await _start_with_port_retry(sup, ports.postgres, spec)
        return pg.url

    async def start_redis() -> str:
        redis = EmbeddedRedis(state_dir / "redis", ports.redis, persistent=not ephemeral)

        def spec(port: int) -> ProcessSpec:
            redis.port = port
            return redis.spec()

        await _start_with_port_retry(sup, ports.redis, spec)
        return redis.url

    async def start_nats() -> str:
        if nats_cluster > 1:
            cluster = EmbeddedNatsCluster(state_dir / "nats", nats_cluster, first_port=ports.nats)
            # together: each node is ready only once a quorum elected a meta leader
            started = await asyncio.gather(
                *(sup.start(spec) for spec in cluster.specs()), return_exceptions=True
            )
            for result in started:
                if isinstance(result, BaseException):
                    raise result
            return cluster.url
        nats = EmbeddedNats(state_dir / "nats", ports.nats)

        def spec(port: int) -> ProcessSpec:
            nats.port = port
            return nats.spec()

        await _start_with_port_retry(sup, ports.nats, spec)
        return nats.url

    starters = {"postgres": start_postgres, "redis": start_redis, "nats": start_nats}
    try:
        await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True)
        wanted = [name for name, url in urls.items() if not url]
        results = await asyncio.gather(
            *(starters[name]() for name in wanted), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for name, result in zip(wanted, results, strict=True):
            urls[name] = str(result)
            embedded.add(name)
    except BaseException:
        await sup.stop_all()
        raise
    infra = Infra(
        state_dir,
        sup,
        urls["postgres"],
        urls["redis"],
        urls["nats"],
        embedded=frozenset(embedded),
        ephemeral=ephemeral,
    )
    infra.startup_seconds = time.monotonic() - started
    _log.info("infrastructure ready in %.2fs: %s", infra.startup_seconds, infra.endpoints())
    return infra
