"""E-mail over SMTP: a small asyncio SMTP client keeping a few connections open.

Each message carries a stable ``Message-ID`` derived from the notification id, so when a
crash between sending and recording makes the sender deliver a row again, the receiver can
recognise the repeat. Error texts are reduced to SMTP codes and exception names: a server's
messages can contain the recipient address, which must never be logged.

Why not ``smtplib`` in a thread per message: the profile of the benchmark showed the sending
threads (a new connection per message: connect, EHLO, MAIL, RCPT, DATA, QUIT) and building an
``EmailMessage`` (the default policy parses every header through ``email.headerregistry``) as
~30 % of the service's CPU. Here a message is plain bytes (:func:`build_message`) and goes out
on a pooled connection on the event loop: MAIL, RCPT and DATA in one write when the server
offers PIPELINING (RFC 2920), then the content. Failures are reported with smtplib's
exception types, so their classification (codes, permanent or not) is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import smtplib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.quoprimime import body_encode

import aiohttp

from notification_svc.config import DEFAULT_SMTP_ADDR
from notification_svc.domain.messages import EmailContent
from notification_svc.domain.model import DeliveryError

logger = logging.getLogger(__name__)

MESSAGE_ID_DOMAIN = "mppo.notification"
#: connections kept open to the SMTP server (and messages in flight at once)
POOL_SIZE = 4
#: an idle connection older than this is closed rather than reused
MAX_IDLE_SECONDS = 30.0
_CRLF = b"\r\n"
_MAX_LINE = 998  # RFC 5322 §2.1.1, without the CRLF


def message_id(delivery_id: str) -> str:
    """The Message-ID of a notification's e-mail: the same on every (re)send."""
    return f"<{delivery_id}@{MESSAGE_ID_DOMAIN}>"


@dataclass(frozen=True)
class Envelope:
    """One message ready for SMTP: envelope sender and recipient, and the message bytes."""

    mail_from: str
    rcpt_to: str
    data: bytes


def _header(name: str, value: str) -> bytes:
    """``Name: value`` + CRLF; non-ASCII (or overlong) values as RFC 2047 encoded words."""
    if "\r" in value or "\n" in value:
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    if value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
        return f"{name}: {value}\r\n".encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line ends) of a UTF-8 text body:
    7bit when it is ASCII in lines SMTP can carry, else quoted-printable (7-bit clean, so no
    server extension is needed)."""
    lines = text.encode("utf-8").splitlines()
    if text.isascii() and all(len(line) <= _MAX_LINE for line in lines):
        return "7bit", _CRLF.join(lines) + _CRLF
    normal = b"\n".join(lines) + b"\n"
    return "quoted-printable", body_encode(normal.decode("latin-1"), 76, eol="\r\n").encode("ascii")


@functools.lru_cache(maxsize=8)
def sender_address(mail_from: str) -> tuple[str, str]:
    """(From: header, envelope sender) of the configured ``MPPO_NOTIFY_FROM``."""
    name, addr = email.utils.parseaddr(mail_from)
    if not addr or not addr.isascii():
        return mail_from, addr or mail_from
    return email.utils.formataddr((name, addr)), addr


def build_message(
    *,
    delivery_id: str,
    mail_from: str,
    to: str,
    display_name: str,
    content: EmailContent,
    headers: Mapping[str, str],
) -> Envelope:
    """The message for one notification: From, To, Subject, Message-ID, Date, ``headers``,
    and the UTF-8 plain-text body."""
    from_header, envelope_from = sender_address(mail_from)
    cte, body = _body(content.body)
    parts = [
        _header("From", from_header),
        _header("To", email.utils.formataddr((display_name, to))),
        _header("Subject", content.subject),
        _header("Message-ID", message_id(delivery_id)),
        _header("Date", email.utils.formatdate(usegmt=True)),
        *(_header(name, value) for name, value in headers.items()),
        b'Content-Type: text/plain; charset="utf-8"\r\n',
        f"Content-Transfer-Encoding: {cte}\r\n".encode("ascii"),
        b"MIME-Version: 1.0\r\n",
        _CRLF,
        body,
    ]
    return Envelope(mail_from=envelope_from, rcpt_to=to, data=b"".join(parts))


def _classify(exc: BaseException) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        permanent = bool(codes) and all(code >= 500 for code in codes)
        return DeliveryError(f"SMTP recipient refused ({codes})", permanent=permanent)
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(
            f"SMTP {type(exc).__name__} {exc.smtp_code}", permanent=exc.smtp_code >= 500
        )
    return DeliveryError(f"SMTP {type(exc).__name__}")


def _address(addr: str) -> bytes:
    """An address for MAIL FROM / RCPT TO (ASCII: internationalized addresses need SMTPUTF8,
    which this client does not speak)."""
    if not addr.isascii():
        raise smtplib.SMTPNotSupportedError("address needs SMTPUTF8")
    return addr.encode("ascii")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA content: leading dots doubled (RFC 5321 §4.5.2), ending in CRLF."""
    if not data.endswith(_CRLF):
        data += _CRLF
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


class SmtpConnection:
    """One open SMTP session (after EHLO/HELO), sending one message at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.extensions: set[str] = set()
        self.idle_since = time.monotonic()
        #: set once a message's content was written: a failure after it may have delivered
        self.data_sent = False
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, local_hostname: str) -> SmtpConnection:
        """Connect, read the greeting and say EHLO (HELO if EHLO is refused)."""
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer)
        try:
            code, msg = await conn._reply()
            if code != 220:
                raise smtplib.SMTPConnectError(code, msg)
            code, msg = await conn.command(b"EHLO " + local_hostname.encode("ascii"))
            if code == 250:
                conn.extensions = {
                    line.split(None, 1)[0].decode("ascii", "replace").upper()
                    for line in msg.split(b"\n")[1:]
                    if line.strip()
                }
            else:
                code, msg = await conn.command(b"HELO " + local_hostname.encode("ascii"))
                if code != 250:
                    raise smtplib.SMTPHeloError(code, msg)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _reply(self) -> tuple[int, bytes]:
        """One (possibly multi-line) reply: its code and text lines."""
        lines: list[bytes] = []
        code = -1
        while True:
            line = await self._reader.readline()
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
                break
            if line[3:4] != b"-":
                break
        return code, b"\n".join(lines)

    async def command(self, line: bytes) -> tuple[int, bytes]:
        """Send one command line and read its reply."""
        self._writer.write(line + _CRLF)
        await self._writer.drain()
        return await self._reply()

    async def send(self, envelope: Envelope) -> None:
        """One SMTP transaction; raises smtplib's exceptions as ``sendmail`` does.

        After a refusal the session is reset (RSET) and stays usable, unless the server
        said it is closing (421).
        """
        self.data_sent = False
        commands = [
            b"MAIL FROM:<" + _address(envelope.mail_from) + b">",
            b"RCPT TO:<" + _address(envelope.rcpt_to) + b">",
            b"DATA",
        ]
        if "PIPELINING" in self.extensions:
            self._writer.write(b"".join(c + _CRLF for c in commands))
            await self._writer.drain()
            replies = [await self._reply() for _ in commands]
            if replies[2][0] == 354 and (replies[0][0] != 250 or replies[1][0] not in (250, 251)):
                # DATA accepted although the transaction failed: end the empty content
                await self.command(b".")
        else:
            replies = []
            for c in commands:
                replies.append(await self.command(c))
                if replies[-1][0] not in (250, 251):
                    break  # what follows would only be refused
        code, msg = replies[0]
        if code != 250:
            await self._reset(code)
            raise smtplib.SMTPSenderRefused(code, msg, envelope.mail_from)
        code, msg = replies[1]
        if code not in (250, 251):
            await self._reset(code)
            raise smtplib.SMTPRecipientsRefused({envelope.rcpt_to: (code, msg)})
        code, msg = replies[2]
        if code != 354:
            await self._reset(code)
            raise smtplib.SMTPDataError(code, msg)
        self.data_sent = True
        self._writer.write(_dot_stuffed(envelope.data) + b"." + _CRLF)
        await self._writer.drain()
        code, msg = await self._reply()
        if code != 250:
            if code == 421:
                self.close()
            raise smtplib.SMTPDataError(code, msg)

    async def _reset(self, code: int) -> None:
        """After a refused command: RSET, or close when the server is going away."""
        if code == 421:
            self.close()
            return
        try:
            rset, _ = await self.command(b"RSET")
        except (smtplib.SMTPException, OSError):
            self.close()
            return
        if rset != 250:
            self.close()

    async def quit(self) -> None:
        """Say QUIT (without waiting long for the answer) and close."""
        if not self.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.command(b"QUIT")
        self.close()

    def close(self) -> None:
        """Drop the connection."""
        if not self.closed:
            self.closed = True
            self._writer.close()


class SmtpMailer:
    """Sends e-mail to ``smtp_addr``, or to the SMTP port the local sink announces."""

    def __init__(
        self,
        *,
        smtp_addr: str,
        sink_addr: str,
        mail_from: str,
        timeout: float,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self._explicit = smtp_addr
        self._sink_addr = sink_addr
        self._mail_from = mail_from
        self._timeout = timeout
        self._resolved = smtp_addr
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[tuple[str, SmtpConnection]] = []
        self._hostname = ""

    async def _target(self) -> str:
        if self._resolved:
            return self._resolved
        if not self._sink_addr:
            self._resolved = DEFAULT_SMTP_ADDR
            return self._resolved
        url = f"http://{self._sink_addr}/info"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as http,
                http.get(url) as resp,
            ):
                resp.raise_for_status()
                info = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DeliveryError(f"SMTP sink info unavailable ({type(exc).__name__})") from None
        self._resolved = str(info["smtp_addr"])
        logger.info("e-mail goes to the SMTP sink at %s", self._resolved)
        return self._resolved

    async def send(
        self,
        *,
        delivery_id: str,
        to: str,
        display_name: str,
        content: EmailContent,
        headers: Mapping[str, str],
    ) -> None:
        """Deliver one e-mail; raises DeliveryError."""
        target = await self._target()
        envelope = build_message(
            delivery_id=delivery_id,
            mail_from=self._mail_from,
            to=to,
            display_name=display_name,
            content=content,
            headers=headers,
        )
        try:
            async with self._slots, asyncio.timeout(self._timeout):
                await self._send(target, envelope)
        except (smtplib.SMTPException, OSError) as exc:
            if not self._explicit and not isinstance(exc, smtplib.SMTPResponseException):
                self._resolved = ""  # the sink may have moved: ask again next time
            raise _classify(exc) from None

    async def _send(self, target: str, envelope: Envelope) -> None:
        """On an idle connection if there is one (again on a new one if that one turns out
        to be closed before the content went out), else on a new one."""
        while True:
            conn, reused = self._take(target), True
            if conn is None:
                conn, reused = await self._connect(target), False
            try:
                await conn.send(envelope)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                conn.close()
                if reused and not conn.data_sent:
                    logger.debug("idle SMTP connection was closed (%r); reconnecting", exc)
                    continue
                raise
            except (
                smtplib.SMTPResponseException,
                smtplib.SMTPRecipientsRefused,
                smtplib.SMTPNotSupportedError,
            ):
                self._put(target, conn)  # refused, and reset: the session goes on
                raise
            except BaseException:
                conn.close()  # timeout or cancellation mid-transaction: state unknown
                raise
            self._put(target, conn)
            return

    def _take(self, target: str) -> SmtpConnection | None:
        now = time.monotonic()
        while self._idle:
            at, conn = self._idle.pop()
            if at == target and not conn.closed and now - conn.idle_since < MAX_IDLE_SECONDS:
                return conn
            conn.close()
        return None

    def _put(self, target: str, conn: SmtpConnection) -> None:
        now = time.monotonic()
        for stale in [c for c in self._idle if now - c[1].idle_since >= MAX_IDLE_SECONDS]:
            self._idle.remove(stale)
            stale[1].close()
        if conn.closed:
            return
        conn.idle_since = now
        self._idle.append((target, conn))

    async def _connect(self, target: str) -> SmtpConnection:
        if not self._hostname:
            self._hostname = await asyncio.to_thread(_local_hostname)
        host, _, port = target.rpartition(":")
        return await SmtpConnection.open(host, int(port), self._hostname)

    async def close(self) -> None:
        """QUIT every idle connection."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.quit() for _, conn in idle))


def _local_hostname() -> str:
    """What EHLO says: the FQDN, or an address literal as smtplib does."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"
