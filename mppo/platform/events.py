"""The event envelope shared by every service, and its NATS header codec.

An :class:`Event` is generic: the payload is the serialized protobuf message and the event
type is its subject without prefix (``group.created``). Metadata travels in NATS headers
exactly as docs/conventions.md spells them (``Nats-Msg-Id``, ``Mppo-Event-Id``,
``Mppo-Event-Type``, ``Mppo-Aggregate-Id``, ``Mppo-Occurred-At``, ``traceparent``,
``tracestate``).

Typed decoding goes through :func:`decode` with an explicit message class; a registry from
subject to class (built from the ``(mppo.common.v1.event_subject)`` proto option) can be plugged
in later through :data:`MessageResolver` / :func:`decode_with`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from google.protobuf.message import Message
from opentelemetry import propagate
from opentelemetry.context import Context

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EVENT_ID = "Mppo-Event-Id"
HEADER_EVENT_TYPE = "Mppo-Event-Type"
HEADER_AGGREGATE_ID = "Mppo-Aggregate-Id"
HEADER_OCCURRED_AT = "Mppo-Occurred-At"
TRACE_HEADERS = ("traceparent", "tracestate")

_EVENT_TYPE_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")

M = TypeVar("M", bound=Message)


class MalformedEventError(ValueError):
    """A message lacks a required event header or carries an invalid value."""


class HeaderCarrier(Protocol):
    """What :meth:`Event.from_msg` needs from a NATS message (``nats.aio.msg.Msg`` fits)."""

    @property
    def headers(self) -> dict[str, str] | None: ...

    @property
    def data(self) -> bytes: ...


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z`` suffix."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text!r}")
    return moment.astimezone(UTC)


def validate_event_type(event_type: str) -> str:
    """Return ``event_type`` if it is a dotted lowercase subject such as ``group.created``."""
    if not _EVENT_TYPE_RE.fullmatch(event_type):
        raise ValueError(f"invalid event type {event_type!r}")
    return event_type


def current_trace_headers() -> dict[str, str]:
    """The W3C trace context of the current OpenTelemetry context (empty when none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key: value for key, value in carrier.items() if key in TRACE_HEADERS}


@dataclass(frozen=True, slots=True)
class Event:
    """One fact, as stored in the outbox and carried on NATS."""

    event_id: str
    event_type: str
    aggregate_id: str
    payload: bytes
    occurred_at: datetime
    trace: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        event_type: str,
        aggregate_id: str,
        message: Message,
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Build an event from a protobuf message, capturing the current trace context."""
        return cls.from_payload(
            event_type,
            aggregate_id,
            message.SerializeToString(deterministic=True),
            event_id=event_id,
            occurred_at=occurred_at,
        )

    @classmethod
    def from_payload(
        cls,
        event_type: str,
        aggregate_id: str,
        payload: bytes,
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Build an event from an already serialized payload."""
        return cls(
            event_id=event_id or str(uuid.uuid4()),
            event_type=validate_event_type(event_type),
            aggregate_id=aggregate_id,
            payload=payload,
            occurred_at=occurred_at or datetime.now(UTC),
            trace=current_trace_headers(),
        )

    def to_headers(self) -> dict[str, str]:
        """The NATS headers of this event (``Nats-Msg-Id`` is the event id)."""
        headers = {
            HEADER_MSG_ID: self.event_id,
            HEADER_EVENT_ID: self.event_id,
            HEADER_EVENT_TYPE: self.event_type,
            HEADER_AGGREGATE_ID: self.aggregate_id,
            HEADER_OCCURRED_AT: format_timestamp(self.occurred_at),
        }
        headers.update({k: v for k, v in self.trace.items() if k in TRACE_HEADERS})
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], payload: bytes) -> Event:
        """Rebuild an event from its headers and payload; raises :class:`MalformedEventError`."""

        def required(name: str) -> str:
            value = headers.get(name)
            if not value:
                raise MalformedEventError(f"missing header {name}")
            return value

        try:
            event_type = validate_event_type(required(HEADER_EVENT_TYPE))
            occurred_at = parse_timestamp(required(HEADER_OCCURRED_AT))
        except ValueError as exc:
            raise MalformedEventError(str(exc)) from exc
        return cls(
            event_id=required(HEADER_EVENT_ID),
            event_type=event_type,
            aggregate_id=required(HEADER_AGGREGATE_ID),
            payload=payload,
            occurred_at=occurred_at,
            trace={k: headers[k] for k in TRACE_HEADERS if headers.get(k)},
        )

    @classmethod
    def from_msg(cls, msg: HeaderCarrier) -> Event:
        """Rebuild an event from a NATS message."""
        return cls.from_headers(msg.headers or {}, msg.data)

    def trace_context(self) -> Context:
        """The OpenTelemetry context the event was created in, to parent consumer spans."""
        return propagate.extract(dict(self.trace))


def decode(event: Event, message_cls: type[M]) -> M:
    """Parse the event payload as ``message_cls``."""
    message = message_cls()
    message.ParseFromString(event.payload)
    return message


MessageResolver = Callable[[str], type[Message]]
"""Maps an event type (subject without prefix) to its protobuf class; the registry built from
the ``(mppo.common.v1.event_subject)`` option will be one of these."""


def decode_with(event: Event, resolve: MessageResolver) -> Message:
    """Parse the event payload with the class ``resolve`` names for its event type."""
    return decode(event, resolve(event.event_type))
