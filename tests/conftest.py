"""Shared fixtures: embedded Postgres, Redis and NATS JetStream for the whole test session.

Importing this module starts nothing. The ``infra`` fixture starts the three servers on free
ports the first time a test asks for them (about a second), or uses the servers named by
``MPPO_POSTGRES_URL`` (a maintenance database such as ``postgres``), ``MPPO_REDIS_URL`` and
``MPPO_NATS_URL``. Tests isolate themselves with ``fresh_database``, ``redis_prefix`` and
``nats_prefix``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mppo.devstack import FREE_PORTS, Infra, drop_database, start_infra
from mppo.platform.telemetry import configure_tracing
from tests.support.pki import Pki, mint_pki


def _short_id() -> str:
    return uuid.uuid4().hex[:6]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infra(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Infra]:
    """Postgres, Redis, NATS JetStream for the session.

    ``infra.postgres_url(dbname)``, ``await infra.create_database(name)`` (returns its URL),
    ``infra.redis_url``, ``infra.nats_url``, ``infra.postgres_server_url``.
    """
    state_dir = tmp_path_factory.mktemp("mppo-infra")
    started = await start_infra(state_dir, ports=FREE_PORTS, fsync=False, ephemeral=True)
    try:
        yield started
    finally:
        await started.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database(infra: Infra) -> AsyncIterator[str]:
    """A new, empty database for one test: its ``postgresql://`` URL. Dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = await infra.create_database(name)
    yield url
    with contextlib.suppress(Exception):
        await drop_database(infra.postgres_server_url, name)


@pytest.fixture
def nats_prefix() -> str:
    """A unique lowercase prefix (``t3f9a2``) for one test's subjects; upper-case it for
    stream names (docs/conventions.md)."""
    return f"t{_short_id()}"


@pytest.fixture
def nats_url(infra: Infra) -> str:
    return infra.nats_url


@pytest.fixture
def redis_url(infra: Infra) -> str:
    """The shared Redis; isolate keys with ``redis_prefix``."""
    return infra.redis_url


@pytest.fixture
def redis_prefix() -> str:
    """A unique key prefix such as ``t3f9a2:`` for one test."""
    return f"t{_short_id()}:"


@pytest.fixture(scope="session")
def _session_span_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing("tests", extra=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def span_exporter(_session_span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """Spans finished in this process during one test (the tracer provider is global, so it
    is installed once per session and cleared per test)."""
    _session_span_exporter.clear()
    return _session_span_exporter


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A development PKI for the session (tests/support/pki.py): certificates for the dev
    identities and ``tests``, the user-token keys; ``pki.env()`` sets ``MPPO_TLS_DIR``."""
    return mint_pki(tmp_path_factory.mktemp("pki"))
