"""A counting TCP proxy in front of Postgres: what clients send, read off the wire protocol.

Counts do not depend on timing or on the client library's internals: every simple query
(``Q``, by its first word: BEGIN, COMMIT, ROLLBACK, ...), every extended-protocol Execute
(``E``) and Sync (``S``). A Sync or a simple query waits for the server's ReadyForQuery, so
``round_trips`` = simple queries + syncs. A Sync outside a BEGIN block ends a transaction of
its own (an implicit, single-statement one), so ``transactions`` = BEGINs + those syncs;
Postgres counts both in ``pg_stat_database.xact_commit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


@dataclass
class WireCounts:
    """What clients sent through the proxy."""

    queries: Counter[str] = field(default_factory=Counter)
    executes: int = 0
    syncs: int = 0
    implicit: int = 0

    @property
    def begins(self) -> int:
        """Explicit transactions (BEGIN ...)."""
        return self.queries["BEGIN"]

    @property
    def statements(self) -> int:
        """Statements other than transaction control."""
        control = self.queries["BEGIN"] + self.queries["COMMIT"] + self.queries["ROLLBACK"]
        return self.executes + sum(self.queries.values()) - control

    @property
    def round_trips(self) -> int:
        """Messages the client waits on: simple queries and syncs."""
        return sum(self.queries.values()) + self.syncs

    @property
    def transactions(self) -> int:
        """Explicit transactions plus implicit single-statement ones."""
        return self.begins + self.implicit

    def minus(self, before: WireCounts) -> WireCounts:
        """The counts since ``before``."""
        return WireCounts(
            queries=self.queries - before.queries,
            executes=self.executes - before.executes,
            syncs=self.syncs - before.syncs,
            implicit=self.implicit - before.implicit,
        )

    def copy(self) -> WireCounts:
        """A snapshot."""
        return self.minus(WireCounts())

    def summary(self) -> dict[str, int]:
        """The numbers a report shows."""
        return {
            "transactions": self.transactions,
            "begin": self.begins,
            "implicit": self.implicit,
            "statements": self.statements,
            "round_trips": self.round_trips,
        }


class WireCounter:
    """``await WireCounter(host, port).start()`` → the port to connect to instead."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.counts = WireCounts()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free local port; returns it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and cut every proxied connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def snapshot(self) -> WireCounts:
        """The counts so far (a copy)."""
        return self.counts.copy()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        down = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            await self._client(reader, up_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            down.cancel()
            for w in (up_writer, writer):
                w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _client(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        # start-up messages have no type byte; SSL/GSS requests are answered by one byte
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            body = await reader.readexactly(length - 8)
            up.write(head + body)
            await up.drain()
            if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                break
        in_block = False
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind == b"Q":
                text = body.rstrip(b"\0").strip()
                verb = text.split(None, 1)[0].decode().upper().rstrip(";") if text else ""
                if verb == "START":
                    verb = "BEGIN"
                self.counts.queries[verb] += 1
                if verb == "BEGIN":
                    in_block = True
                elif verb in ("COMMIT", "ROLLBACK", "END"):
                    in_block = False
            elif kind == b"E":
                self.counts.executes += 1
            elif kind == b"S":
                self.counts.syncs += 1
                if not in_block:
                    self.counts.implicit += 1
            up.write(head + body)
            await up.drain()
            if kind == b"X":
                return
