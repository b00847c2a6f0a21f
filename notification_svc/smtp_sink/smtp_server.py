"""A minimal SMTP server (RFC 5321 subset) on asyncio streams that stores what it receives.

Commands: EHLO/HELO, MAIL FROM, RCPT TO, DATA (with dot-unstuffing), RSET, NOOP, VRFY, QUIT;
clients may pipeline them (PIPELINING).
Every recipient is accepted; nothing is relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from notification_svc.smtp_sink.store import MessageStore

logger = logging.getLogger(__name__)

HOSTNAME = "mppo-smtp-sink"
MAX_SIZE = 10 * 1024 * 1024
MAX_RECIPIENTS = 100
IDLE_TIMEOUT = 300.0
#: what EHLO announces; commands are handled in order, so pipelined ones (RFC 2920) just work
EXTENSIONS: tuple[str, ...] = ("8BITMIME", "SMTPUTF8", f"SIZE {MAX_SIZE}", "PIPELINING", "HELP")
_PATH = re.compile(r"^\s*<([^<>]*)>(?:\s+(.*))?$")


class _Session:
    """One client connection."""

    def __init__(
        self, store: MessageStore, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._store = store
        self._reader = reader
        self._writer = writer
        self._greeted = False
        self._reset()

    def _reset(self) -> None:
        self._mail_from: str | None = None
        self._rcpt_to: list[str] = []

    async def _reply(self, text: str) -> None:
        self._writer.write(text.encode() + b"\r\n")
        await self._writer.drain()

    async def _line(self) -> bytes:
        return await asyncio.wait_for(self._reader.readline(), IDLE_TIMEOUT)

    async def run(self) -> None:
        await self._reply(f"220 {HOSTNAME} ESMTP ready")
        while True:
            raw = await self._line()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = line.partition(" ")
            if not await self._command(verb.upper(), arg.strip()):
                return

    async def _command(self, verb: str, arg: str) -> bool:
        """Handle one command; False ends the session."""
        match verb:
            case "EHLO":
                self._greeted = True
                self._reset()
                lines = [f"{HOSTNAME} greets {arg or 'you'}", *EXTENSIONS]
                await self._reply(
                    "\r\n".join(f"250-{line}" for line in lines[:-1]) + f"\r\n250 {lines[-1]}"
                )
            case "HELO":
                self._greeted = True
                self._reset()
                await self._reply(f"250 {HOSTNAME}")
            case "MAIL":
                await self._mail(arg)
            case "RCPT":
                await self._rcpt(arg)
            case "DATA":
                return await self._data()
            case "RSET":
                self._reset()
                await self._reply("250 OK")
            case "NOOP":
                await self._reply("250 OK")
            case "VRFY":
                await self._reply("252 Cannot VRFY user, but will accept message")
            case "QUIT":
                await self._reply(f"221 {HOSTNAME} closing connection")
                return False
            case _:
                await self._reply("502 Command not implemented")
        return True

    async def _mail(self, arg: str) -> None:
        if not self._greeted:
            await self._reply("503 Send EHLO or HELO first")
            return
        if self._mail_from is not None:
            await self._reply("503 Nested MAIL command")
            return
        if not arg.upper().startswith("FROM:"):
            await self._reply("501 Syntax: MAIL FROM:<address>")
            return
        path = _PATH.match(arg[5:])
        if path is None:
            await self._reply("501 Syntax: MAIL FROM:<address>")
            return
        self._mail_from = path.group(1)
        await self._reply("250 OK")

    async def _rcpt(self, arg: str) -> None:
        if self._mail_from is None:
            await self._reply("503 Need MAIL before RCPT")
            return
        path = _PATH.match(arg[3:]) if arg.upper().startswith("TO:") else None
        if path is None or not path.group(1):
            await self._reply("501 Syntax: RCPT TO:<address>")
            return
        if len(self._rcpt_to) >= MAX_RECIPIENTS:
            await self._reply("452 Too many recipients")
            return
        self._rcpt_to.append(path.group(1))
        await self._reply("250 OK")

    async def _data(self) -> bool:
        if self._mail_from is None or not self._rcpt_to:
            await self._reply("503 Need RCPT before DATA")
            return True
        await self._reply("354 End data with <CR><LF>.<CR><LF>")
        lines: list[bytes] = []
        size = 0
        while True:
            raw = await self._line()
            if not raw:
                return False  # connection dropped mid-message: nothing is stored
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]  # dot-unstuffing (RFC 5321 §4.5.2)
            size += len(raw)
            if size <= MAX_SIZE:
                lines.append(raw)
        if size > MAX_SIZE:
            self._reset()
            await self._reply("552 Message exceeds fixed maximum message size")
            return True
        received = self._store.add(self._mail_from, self._rcpt_to, b"".join(lines))
        logger.info("message %s stored (%s recipients)", received.id, len(received.rcpt_to))
        self._reset()
        await self._reply(f"250 OK queued as {received.id}")
        return True


async def start_smtp_server(store: MessageStore, host: str, port: int) -> asyncio.Server:
    """Listen for SMTP on ``host:port`` (0 = a free port)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _Session(store, reader, writer).run()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("SMTP session failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(on_connect, host, port)
