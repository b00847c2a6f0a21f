"""Postgres access: the async engine and session factories (the unit of work is in
:mod:`mppo.platform.unit_of_work`).

Session settings go through asyncpg ``server_settings`` (the pool's ``RESET ALL`` on release
would undo a ``SET`` made at connect time), and acquiring a pooled connection is bounded by
``pool_timeout``.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

_ACCEPTED_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg"}


def to_async_url(url: str) -> URL:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (other drivers are refused)."""
    parsed = make_url(url)
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise ValueError(f"unsupported database driver {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+asyncpg")


def create_engine(
    url: str,
    *,
    application_name: str = "mppo",
    pool_size: int = 5,
    max_overflow: int = 5,
    pool_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    statement_timeout_ms: int = 30_000,
    lock_timeout_ms: int = 10_000,
    idle_in_transaction_timeout_ms: int = 60_000,
    echo: bool = False,
) -> AsyncEngine:
    """An asyncpg-backed engine with bounded pool waits and per-connection server settings."""
    server_settings = {
        "application_name": application_name,
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(idle_in_transaction_timeout_ms),
        "timezone": "UTC",
    }
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # No ping before every checkout (a round trip per transaction, ~10 % of a service's
        # database CPU in the profile of bench/RESULTS.md): a connection that died with the
        # server fails its first statement, SQLAlchemy then invalidates the whole pool (every
        # pooled connection is replaced), the call answers UNAVAILABLE (retryable), and the
        # runtime's watchdog query every 2 s usually finds the outage first.
        pool_pre_ping=False,
        pool_recycle=1800,
        echo=echo,
        connect_args={"server_settings": server_settings, "timeout": connect_timeout},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (no lazy reload in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)
