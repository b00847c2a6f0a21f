"""The event envelope and its NATS header codec (docs/conventions.md)."""

from __future__ import annotations

import uuid
from dataclasses import FrozenInstanceError, dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from mppo.platform.events import (
    Event,
    MalformedEventError,
    decode,
    decode_with,
    format_timestamp,
    parse_timestamp,
)
from mppo.platform.messaging import dlq_subject, stream_name, subject_for


@dataclass
class FakeMsg:
    headers: dict[str, str] | None
    data: bytes


def test_create_serializes_the_message_and_assigns_a_uuid4() -> None:
    event = Event.create("group.created", "g-1", StringValue(value="hello"))

    assert uuid.UUID(event.event_id).version == 4
    assert event.event_type == "group.created"
    assert event.aggregate_id == "g-1"
    assert decode(event, StringValue).value == "hello"
    assert event.occurred_at.tzinfo is not None
    assert event.trace == {}  # no active span


def test_event_is_frozen() -> None:
    event = Event.create("group.created", "g-1", StringValue(value="x"))
    with pytest.raises(FrozenInstanceError):
        event.aggregate_id = "other"  # type: ignore[misc]


def test_headers_follow_the_conventions_exactly() -> None:
    occurred = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    event = Event.from_payload(
        "payment.succeeded", "p-9", b"\x01", event_id="e-1", occurred_at=occurred
    )

    assert event.to_headers() == {
        "Nats-Msg-Id": "e-1",
        "Mppo-Event-Id": "e-1",
        "Mppo-Event-Type": "payment.succeeded",
        "Mppo-Aggregate-Id": "p-9",
        "Mppo-Occurred-At": "2026-01-02T03:04:05.678901Z",
    }


def test_round_trip_through_a_nats_message() -> None:
    event = Event.create("member.paid", "g-7", StringValue(value="v"))
    msg = FakeMsg(headers=event.to_headers(), data=event.payload)

    assert Event.from_msg(msg) == event


def test_the_inbox_key_is_the_event_id_not_the_msg_id() -> None:
    event = Event.create("member.paid", "g-7", StringValue(value="v"))
    headers = event.to_headers() | {"Nats-Msg-Id": "something-else"}

    assert Event.from_msg(FakeMsg(headers, event.payload)).event_id == event.event_id


@pytest.mark.parametrize(
    "missing", ["Mppo-Event-Id", "Mppo-Event-Type", "Mppo-Aggregate-Id", "Mppo-Occurred-At"]
)
def test_missing_headers_are_malformed(missing: str) -> None:
    headers = Event.create("group.created", "g", StringValue()).to_headers()
    del headers[missing]
    with pytest.raises(MalformedEventError, match=missing):
        Event.from_msg(FakeMsg(headers, b""))


def test_bad_values_are_malformed() -> None:
    headers = Event.create("group.created", "g", StringValue()).to_headers()
    with pytest.raises(MalformedEventError):
        Event.from_headers(headers | {"Mppo-Occurred-At": "yesterday"}, b"")
    with pytest.raises(MalformedEventError):
        Event.from_headers(headers | {"Mppo-Event-Type": "Group Created"}, b"")
    with pytest.raises(MalformedEventError):
        Event.from_msg(FakeMsg(None, b""))


def test_invalid_event_type_is_refused_at_creation() -> None:
    with pytest.raises(ValueError, match="invalid event type"):
        Event.create("group.>", "g", StringValue())


def test_timestamps_are_rfc3339_utc() -> None:
    local = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    text = format_timestamp(local)
    assert text == "2026-05-01T06:30:00.000000Z"
    assert parse_timestamp(text) == local
    assert parse_timestamp("2026-05-01T06:30:00+00:00").tzinfo == UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 1))


def test_current_trace_context_is_injected_and_extractable() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("command") as span:
        event = Event.create("order.created", "o-1", StringValue())
    trace_id = f"{span.get_span_context().trace_id:032x}"

    headers = event.to_headers()
    assert trace_id in headers["traceparent"]
    restored = Event.from_msg(FakeMsg(headers, event.payload))
    assert restored.trace == event.trace

    parent = trace.get_current_span(restored.trace_context()).get_span_context()
    assert parent.trace_id == span.get_span_context().trace_id


def test_decode_with_a_resolver_hook() -> None:
    event = Event.create("group.created", "g", StringValue(value="z"))
    registry = {"group.created": StringValue}

    message = decode_with(event, registry.__getitem__)
    assert isinstance(message, StringValue)
    assert message.value == "z"


def test_names_with_and_without_prefix() -> None:
    assert subject_for("group.created") == "group.created"
    assert subject_for("group.created", "t42") == "t42.group.created"
    assert stream_name("MPPO_GROUP") == "MPPO_GROUP"
    assert stream_name("MPPO_GROUP", "t42") == "T42_MPPO_GROUP"
    assert dlq_subject("order-payments", "payment.succeeded", "t42") == (
        "t42.dlq.order-payments.payment.succeeded"
    )
