"""The SMTP sink's protocol handling, against the standard library's SMTP client."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
import pytest_asyncio

from notification_svc.smtp_sink.smtp_server import start_smtp_server
from notification_svc.smtp_sink.store import MessageStore


@pytest_asyncio.fixture(loop_scope="session")
async def sink() -> AsyncIterator[tuple[MessageStore, int]]:
    store = MessageStore()
    server = await start_smtp_server(store, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield store, port
    finally:
        server.close()
        await server.wait_closed()


def _send(port: int) -> None:
    msg = EmailMessage()
    msg["From"] = "from@example.com"
    msg["To"] = "Zoë <to@example.com>"
    msg["Subject"] = "Grüße"
    msg["Message-ID"] = "<n1@mppo.notification>"
    msg.set_content(".starts with a dot\n..two dots\n.\nend ü\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        assert smtp.noop()[0] == 250
        assert smtp.ehlo()[0] == 250
        smtp.mail("x@example.com")
        assert smtp.rset()[0] == 250
        smtp.send_message(msg, to_addrs=["to@example.com", "cc@example.com"])


async def test_message_is_stored_with_dot_unstuffing_and_unicode(
    sink: tuple[MessageStore, int],
) -> None:
    store, port = sink
    await asyncio.to_thread(_send, port)
    [received] = store.find(to="TO@example.com")
    doc = received.to_json()
    assert doc["rcpt_to"] == ["to@example.com", "cc@example.com"]
    assert doc["mail_from"] == "from@example.com"
    assert doc["subject"] == "Grüße"
    assert doc["message_id"] == "<n1@mppo.notification>"
    assert doc["body"] == ".starts with a dot\n..two dots\n.\nend ü\n"
    assert store.find(message_id="<n1@mppo.notification>") == [received]
    assert store.find(to="nobody@example.com") == []


def _raw_session(port: int, lines: list[str]) -> list[int]:
    codes = []
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        for line in lines:
            code, _ = smtp.docmd(line)
            codes.append(code)
    return codes


async def test_commands_out_of_order_are_refused(sink: tuple[MessageStore, int]) -> None:
    store, port = sink
    codes = await asyncio.to_thread(
        _raw_session,
        port,
        [
            "MAIL FROM:<a@b>",  # before EHLO
            "HELO me",
            "RCPT TO:<a@b>",  # before MAIL
            "DATA",  # before RCPT
            "MAIL FROM:<a@b>",
            "MAIL FROM:<a@b>",  # nested
            "RCPT TO:nonsense",
            "VRFY someone",
            "BOGUS",
        ],
    )
    assert codes == [503, 250, 503, 503, 250, 503, 501, 252, 502]
    assert len(store.messages) == 0


@pytest.mark.parametrize("count", [2])
async def test_several_messages_in_one_session(sink: tuple[MessageStore, int], count: int) -> None:
    store, port = sink

    def send_many() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            for i in range(count):
                smtp.sendmail("a@b", [f"r{i}@b"], f"Subject: s{i}\r\n\r\nbody {i}\r\n")

    await asyncio.to_thread(send_many)
    assert [m.to_json()["subject"] for m in store.messages] == ["s0", "s1"]
    assert store.clear() == 2
    assert not store.messages
