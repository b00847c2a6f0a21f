"""Received messages, kept in memory and parsed for the HTTP API."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

MAX_MESSAGES = 10_000


@dataclass(frozen=True)
class Received:
    """One message as the sink received it."""

    id: str
    received_at: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes

    def parsed(self) -> EmailMessage:
        """The MIME message."""
        return BytesParser(policy=policy.default).parsebytes(self.raw.replace(b"\r\n", b"\n"))

    def to_json(self) -> dict[str, Any]:
        """The API form: envelope, headers, subject and the text body."""
        msg = self.parsed()
        part = msg.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        return {
            "id": self.id,
            "received_at": self.received_at,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "message_id": str(msg.get("Message-ID", "")),
            "subject": str(msg.get("Subject", "")),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "headers": {name: str(value) for name, value in msg.items()},
            "body": body,
        }


@dataclass
class MessageStore:
    """The newest ``MAX_MESSAGES`` messages."""

    messages: deque[Received] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGES))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> Received:
        """Keep one message; returns it with its sink id."""
        received = Received(
            id=str(next(self._ids)),
            received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            mail_from=mail_from,
            rcpt_to=tuple(rcpt_to),
            raw=raw,
        )
        self.messages.append(received)
        return received

    def find(self, *, to: str = "", message_id: str = "") -> list[Received]:
        """Messages whose envelope recipients include ``to`` and/or with that Message-ID."""
        found = list(self.messages)
        if to:
            wanted = to.strip().lower()
            found = [m for m in found if wanted in (r.lower() for r in m.rcpt_to)]
        if message_id:
            found = [m for m in found if str(m.parsed().get("Message-ID", "")) == message_id]
        return found

    def clear(self) -> int:
        """Forget every message; returns how many there were."""
        count = len(self.messages)
        self.messages.clear()
        return count
