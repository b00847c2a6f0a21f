"""Postgres access: the async engine factory and the unit-of-work base services extend.

Session settings go through asyncpg ``server_settings`` (the pool's ``RESET ALL`` on release
would undo a ``SET`` made at connect time), and acquiring a pooled connection is bounded by
``pool_timeout``.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Self

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mppo.platform.events import Event
from mppo.platform.outbox import add_to_outbox

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
        pool_pre_ping=True,
        echo=echo,
        connect_args={"server_settings": server_settings, "timeout": connect_timeout},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (no lazy reload in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


class UnitOfWork:
    """One transaction: ``async with uow:`` rolls back unless :meth:`commit` was called.

    Events passed to :meth:`collect` (plus whatever :meth:`_collect_events` yields, e.g. from
    aggregates a repository has seen) are written to the outbox inside the committing transaction.
    Subclasses add repositories in ``__aenter__`` after calling ``super().__aenter__()``.
    """

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._session: AsyncSession | None = None
        self._events: list[Event] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._session_factory()
        self._events = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self.session, None
        try:
            await session.rollback()
        finally:
            await session.close()
            self._events = []

    def collect(self, *events: Event) -> None:
        """Queue events to be written to the outbox on :meth:`commit`."""
        self._events.extend(events)

    def _collect_events(self) -> Iterable[Event]:
        """Hook for subclasses: drain further events to write on commit (default: none).

        Called once per :meth:`commit`; it must not yield the same event twice.
        """
        return ()

    async def commit(self) -> None:
        """Write the collected events to the outbox and commit, atomically."""
        session = self.session
        for event in [*self._events, *self._collect_events()]:
            await add_to_outbox(session, event)
        await session.commit()
        self._events = []

    async def rollback(self) -> None:
        """Discard the transaction and the events collected so far."""
        await self.session.rollback()
        self._events = []
