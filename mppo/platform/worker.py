"""The one background loop every worker is built on (outbox relay, reconciler, saga runner,
notification sender, expiry scheduler, pruning).

A :class:`LoopWorker` subclass implements :meth:`LoopWorker.work` — do one bounded batch of
work, return whether more is waiting — and gets the rest:

* wake-ups: :meth:`wake` (called after a commit that created work, e.g. through
  ``uow.after_commit(worker.wake)``) and, when ``listen`` names a Postgres channel, a
  ``NOTIFY`` on it from any replica; a wake-up during a round is never lost;
* the poll interval as the safety net (a wake-up is a hint, never the delivery mechanism);
* back-off after a failed round (doubling up to ``max_backoff``), one log line per failure;
* a prompt, clean stop: :meth:`stop` ends the wait at once and :meth:`closing` runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


class Worker(Protocol):
    """Anything the runtime runs in the background until asked to stop."""

    async def run(self) -> None:
        """Run until stop() is called."""

    def stop(self) -> None:
        """Ask run() to return soon."""


class LoopWorker:
    """A wakeable polling loop; subclasses implement :meth:`work`."""

    #: shown in logs
    name = "worker"

    def __init__(
        self,
        *,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        listen: tuple[AsyncEngine, str] | None = None,
    ) -> None:
        self.poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._listen_on = listen
        self._listener: Any = None
        self._listen_retry_at = 0.0
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()

    async def work(self) -> bool:
        """One bounded round of work; True when more is waiting (run again without pause)."""
        raise NotImplementedError

    async def closing(self) -> None:
        """Called once when the loop ends (close clients, connections)."""

    def wake(self) -> None:
        """Run a round soon (the poll interval stays the guarantee)."""
        self._wakeup.set()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current round."""
        self._stopping.set()
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (long rounds may check it between items)."""
        return self._stopping.is_set()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if a stop is asked for."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))

    async def run(self) -> None:
        """Run rounds until :meth:`stop`."""
        logger.info("%s started", self.name)
        failures = 0
        try:
            while not self._stopping.is_set():
                await self._ensure_listener()
                self._wakeup.clear()  # before the round: a wake-up during it is kept
                try:
                    busy = await self.work()
                except Exception as exc:
                    failures += 1
                    pause = min(self._max_backoff, self.poll_interval * 2 ** min(failures, 16))
                    logger.warning(
                        "%s round failed (%s in a row): %r; next in %.1fs",
                        self.name,
                        failures,
                        exc,
                        pause,
                        exc_info=failures == 1,
                    )
                    await self.sleep(pause)
                    continue
                failures = 0
                if busy:
                    await asyncio.sleep(0)  # let other tasks in between full batches
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)
        finally:
            await self._close_listener()
            with contextlib.suppress(Exception):
                await self.closing()
            logger.info("%s stopped", self.name)

    async def _ensure_listener(self) -> None:
        if self._listen_on is None:
            return
        if self._listener is not None and not self._listener.is_closed():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._listen_retry_at:
            return
        self._listen_retry_at = loop.time() + 10.0
        engine, channel = self._listen_on
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = await asyncpg.connect(url, timeout=5)
            await conn.add_listener(channel, lambda *_: self._wakeup.set())
        except Exception as exc:
            logger.warning("%s: LISTEN %s unavailable (%r); polling only", self.name, channel, exc)
            self._listener = None
            return
        self._listener = conn

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
