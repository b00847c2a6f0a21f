"""The unit of work: one transaction, its repositories, its outbox events, its after-commit work.

Every handler in every service, command or event, has the shape ``handler(message, uow)`` and
changes state only through the unit of work it is given::

    async with uow:
        group = await uow.groups.get(cmd.group_id, lock=True)
        group.open(now)              # the aggregate records its domain events
        uow.after_commit(scheduler.wake)
        await uow.commit()

On :meth:`UnitOfWork.commit`, the events recorded by every aggregate a repository handed out
(registered with :meth:`UnitOfWork.track`) are translated to outbox rows (``translate``) and
written, with any events passed to :meth:`UnitOfWork.collect`, in the committing transaction;
after the commit succeeds the callbacks given to :meth:`UnitOfWork.after_commit` run (wake a
worker, refresh a cache). Nothing runs after a rollback.

A service subclasses :class:`UnitOfWork` only to attach its repositories in :meth:`_open`.
Event consumers open a unit of work per event and record the event in the inbox through
:meth:`UnitOfWork.record_inbox` in the same transaction (see :mod:`mppo.platform.inbox`);
:attr:`UnitOfWork.event` is then the envelope of the event being applied.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.platform.events import Event
from mppo.platform.outbox import add_to_outbox
from mppo.platform.schema import inbox

#: built once: the statement every consumed event runs first (no per-call cache-key work)
_RECORD_INBOX = text(
    f"INSERT INTO {inbox.name} (consumer, event_id, event_type)"
    " VALUES (:consumer, :event_id, :event_type)"
    " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
)

logger = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None] | None]


class Aggregate(Protocol):
    """An aggregate that records domain events for the unit of work to publish."""

    events: list[Any]


#: turns one domain event recorded by an aggregate into an outbox event
Translate = Callable[[Any, Any], Event]


def _already_events(aggregate: Any, event: Any) -> Event:
    if not isinstance(event, Event):
        raise TypeError(f"{type(aggregate).__name__} recorded {event!r}; give the UoW a translate")
    return event


class UnitOfWork:
    """``async with uow:`` … ``await uow.commit()``; leaving without a commit rolls back."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        translate: Translate = _already_events,
    ) -> None:
        self._sessions = sessions
        self._translate = translate
        self._session: AsyncSession | None = None
        self._events: list[Event] = []
        self._tracked: list[Aggregate] = []
        self._after_commit: list[AfterCommit] = []
        #: the event being applied, when an event consumer opened this unit of work
        self.event: Event | None = None

    @property
    def session(self) -> AsyncSession:
        """The open session (only inside ``async with``)."""
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    def _open(self, session: AsyncSession) -> None:
        """Hook for subclasses: attach repositories over `session`."""

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._reset()
        self._open(self._session)
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
            self._reset()

    def _reset(self) -> None:
        self._events = []
        self._tracked = []
        self._after_commit = []

    def collect(self, *events: Event) -> None:
        """Queue outbox events that no aggregate recorded (written on commit)."""
        self._events.extend(events)

    def track(self, aggregate: Aggregate) -> None:
        """Publish the events `aggregate` records (repositories call this for what they load)."""
        if not any(seen is aggregate for seen in self._tracked):
            self._tracked.append(aggregate)

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` once the current transaction has committed (never after rollback)."""
        self._after_commit.append(callback)

    def _drain(self) -> Iterable[Event]:
        for aggregate in self._tracked:
            recorded, aggregate.events[:] = list(aggregate.events), []
            for event in recorded:
                yield self._translate(aggregate, event)

    async def record_inbox(self, consumer: str, event: Event) -> bool:
        """Record `event` as applied by `consumer`; False if it already was (a duplicate)."""
        self.event = event
        recorded = await self.session.execute(
            _RECORD_INBOX,
            {"consumer": consumer, "event_id": event.event_id, "event_type": event.event_type},
        )
        return recorded.first() is not None

    async def commit(self) -> None:
        """Write the outbox events and commit atomically; then run the after-commit callbacks."""
        session = self.session
        events = [*self._events, *self._drain()]
        await add_to_outbox(session, *events)
        await session.commit()
        callbacks, self._after_commit = self._after_commit, []
        self._events = []
        for callback in callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("after-commit callback %r failed", callback)

    async def rollback(self) -> None:
        """Discard the transaction, its events and its after-commit callbacks."""
        await self.session.rollback()
        self._reset()
