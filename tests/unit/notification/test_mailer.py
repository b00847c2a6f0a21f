"""The SMTP mailer against the in-process SMTP sink: what the receiver parses out of each
message (headers, non-ASCII, long lines, leading dots), one connection reused across messages
(pipelined or not), a server that closed an idle connection, and refusals classified as
before (permanent for 5xx) without losing the connection."""

from __future__ import annotations

import asyncio
import email.utils
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from notification_svc.adapters.mailer import SmtpMailer, build_message, message_id
from notification_svc.domain.messages import EmailContent
from notification_svc.domain.model import DeliveryError
from notification_svc.smtp_sink import smtp_server
from notification_svc.smtp_sink.smtp_server import start_smtp_server
from notification_svc.smtp_sink.store import MessageStore

HEADERS = {"X-Mppo-Notification-Id": "n-1", "X-Mppo-Group-Id": "g-1", "X-Mppo-Kind": "REMINDER"}


@dataclass
class Sink:
    store: MessageStore
    port: int
    connections: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    sessions: list[Any] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="session")
async def sink(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sink]:
    store = MessageStore()
    server = await start_smtp_server(store, "127.0.0.1", 0)
    found = Sink(store, server.sockets[0].getsockname()[1])
    session = smtp_server._Session
    run, command, rcpt = session.run, session._command, session._rcpt

    async def counted_run(self: Any) -> None:
        found.connections += 1
        found.sessions.append(self)
        await run(self)

    async def counted_command(self: Any, verb: str, arg: str) -> bool:
        found.commands[verb] += 1
        return bool(await command(self, verb, arg))

    async def refusing_rcpt(self: Any, arg: str) -> None:
        if "nobody@" in arg:
            await self._reply("550 No such user here")
        elif "later@" in arg:
            await self._reply("451 Try again later")
        else:
            await rcpt(self, arg)

    monkeypatch.setattr(session, "run", counted_run)
    monkeypatch.setattr(session, "_command", counted_command)
    monkeypatch.setattr(session, "_rcpt", refusing_rcpt)
    try:
        yield found
    finally:
        server.close()
        await server.wait_closed()


def _mailer(sink: Sink, **kw: Any) -> SmtpMailer:
    return SmtpMailer(
        smtp_addr=f"127.0.0.1:{sink.port}",
        sink_addr="",
        mail_from="MPPO <no-reply@mppo.local>",
        timeout=5.0,
        **kw,
    )


async def _send(mailer: SmtpMailer, n: int, to: str = "", body: str = "") -> None:
    await mailer.send(
        delivery_id=f"d-{n}",
        to=to or f"r{n}@example.test",
        display_name=f"Member {n}",
        content=EmailContent(subject=f"Subject {n}", body=body or f"Hi {n},\n\n-- MPPO\n"),
        headers=HEADERS,
    )


async def test_the_receiver_parses_every_header_and_the_utf8_body(sink: Sink) -> None:
    mailer = _mailer(sink)
    link = "https://pay.test/checkout/" + "x" * 120
    body = f"Hi Zoë,\n\n.a line starting with a dot\n.\n{link}\n\n-- MPPO\n"
    await mailer.send(
        delivery_id="n-1",
        to="zoe@example.test",
        display_name='Zoë, "the" payer',
        content=EmailContent(subject="Grüße: your share of € 10.00", body=body),
        headers=HEADERS,
    )
    await mailer.close()
    [received] = sink.store.find(to="zoe@example.test")
    doc = received.to_json()
    assert doc["mail_from"] == "no-reply@mppo.local"
    assert doc["rcpt_to"] == ["zoe@example.test"]
    assert doc["from"] == "MPPO <no-reply@mppo.local>"
    assert doc["to"] == '"Zoë, \\"the\\" payer" <zoe@example.test>'
    assert doc["subject"] == "Grüße: your share of € 10.00"
    assert doc["message_id"] == message_id("n-1") == "<n-1@mppo.notification>"
    assert doc["body"] == body
    for name, value in HEADERS.items():
        assert doc["headers"][name] == value
    assert doc["headers"]["Content-Type"] == 'text/plain; charset="utf-8"'
    assert doc["headers"]["MIME-Version"] == "1.0"
    assert email.utils.parsedate_to_datetime(doc["headers"]["Date"]).tzinfo is not None
    raw_lines = received.raw.split(b"\r\n")
    assert max(len(line) for line in raw_lines) <= 998
    assert all(line.isascii() for line in raw_lines)


def test_an_ascii_message_is_sent_as_7bit_and_header_injection_is_refused() -> None:
    content = EmailContent(subject="Payment received", body="Hi Ann,\n\n-- MPPO\n")
    envelope = build_message(
        delivery_id="d",
        mail_from="MPPO <no-reply@mppo.local>",
        to="ann@example.test",
        display_name="Ann",
        content=content,
        headers={},
    )
    assert (envelope.mail_from, envelope.rcpt_to) == ("no-reply@mppo.local", "ann@example.test")
    head, _, body = envelope.data.partition(b"\r\n\r\n")
    assert b"Content-Transfer-Encoding: 7bit" in head.split(b"\r\n")
    assert b"To: Ann <ann@example.test>" in head.split(b"\r\n")
    assert body == b"Hi Ann,\r\n\r\n-- MPPO\r\n"
    with pytest.raises(ValueError, match="linefeed"):
        build_message(
            delivery_id="d",
            mail_from="MPPO <no-reply@mppo.local>",
            to="ann@example.test",
            display_name="Ann",
            content=EmailContent(subject="x\r\nBcc: evil@example.test", body="b"),
            headers={},
        )


@pytest.mark.parametrize("pipelining", [True, False])
async def test_one_connection_carries_many_messages(
    sink: Sink, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    if not pipelining:
        monkeypatch.setattr(
            smtp_server, "EXTENSIONS", tuple(e for e in smtp_server.EXTENSIONS if e != "PIPELINING")
        )
    mailer = _mailer(sink)
    for n in range(5):
        await _send(mailer, n)
    assert sink.connections == 1
    assert sink.commands == Counter({"EHLO": 1, "MAIL": 5, "RCPT": 5, "DATA": 5})
    await mailer.close()
    assert sink.commands["QUIT"] == 1
    assert [m.rcpt_to for m in sink.store.messages] == [(f"r{n}@example.test",) for n in range(5)]


async def test_concurrent_sends_use_at_most_the_pool(sink: Sink) -> None:
    mailer = _mailer(sink, pool_size=3)
    await asyncio.gather(*(_send(mailer, n) for n in range(12)))
    assert len(sink.store.messages) == 12
    assert sink.connections <= 3
    await asyncio.gather(*(_send(mailer, n) for n in range(12, 18)))
    assert sink.connections <= 3  # the idle ones were reused
    await mailer.close()


async def test_a_connection_the_server_closed_is_replaced_and_the_message_sent_once(
    sink: Sink,
) -> None:
    mailer = _mailer(sink)
    await _send(mailer, 1)
    for session in sink.sessions:
        session._writer.close()  # the server drops the idle connection
    await asyncio.sleep(0.05)
    await _send(mailer, 2)
    assert sink.connections == 2
    assert [m.rcpt_to for m in sink.store.messages] == [("r1@example.test",), ("r2@example.test",)]
    await mailer.close()


async def test_refused_recipients_are_classified_and_the_connection_kept(sink: Sink) -> None:
    mailer = _mailer(sink)
    with pytest.raises(DeliveryError) as refused:
        await _send(mailer, 1, to="nobody@example.test")
    assert refused.value.reason == "SMTP recipient refused ([550])"
    assert refused.value.permanent
    with pytest.raises(DeliveryError) as later:
        await _send(mailer, 2, to="later@example.test")
    assert later.value.reason == "SMTP recipient refused ([451])"
    assert not later.value.permanent
    await _send(mailer, 3)
    assert sink.connections == 1
    assert sink.commands["RSET"] == 2
    assert [m.rcpt_to for m in sink.store.messages] == [("r3@example.test",)]
    await mailer.close()


async def test_no_server_is_a_transient_failure() -> None:
    mailer = SmtpMailer(
        smtp_addr="127.0.0.1:1", sink_addr="", mail_from="MPPO <no-reply@mppo.local>", timeout=2
    )
    with pytest.raises(DeliveryError) as failed:
        await _send(mailer, 1)
    assert failed.value.reason == "SMTP ConnectionRefusedError"
    assert not failed.value.permanent
