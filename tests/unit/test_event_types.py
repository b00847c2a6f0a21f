"""The event registry is built from the contracts and covers every subject we publish."""

from __future__ import annotations

import pytest

from mppo.group.v1 import group_events_pb2, group_pb2
from mppo.platform.event_types import (
    UnknownEventTypeError,
    decode_event,
    message_class,
    new_event,
    registry,
    subject_of,
)

# docs/design.md §6 and the seed's topics, plus the lifecycle subjects the issues name.
REQUIRED_SUBJECTS = {
    "group.created",
    "member.added",
    "member.removed",
    "member.paid",
    "group.opened",
    "group.fully_paid",
    "group.finalized",
    "group.expired",
    "group.cancelled",
    "group.confirmed",
    "payment.requested",
    "payment.succeeded",
    "payment.failed",
    "payment.captured",
    "payment.voided",
    "payment.refunded",
    "order.created",
    "order.confirmed",
    "order.failed",
}


def test_every_required_subject_has_exactly_one_payload_message() -> None:
    missing = REQUIRED_SUBJECTS - set(registry())
    assert not missing, f"no event message declares {sorted(missing)}"


def test_subjects_belong_to_a_provisioned_stream() -> None:
    from mppo.platform.messaging import STREAMS

    patterns = [p.removesuffix(".>") for subjects in STREAMS.values() for p in subjects]
    for subject in registry():
        assert any(subject.startswith(p + ".") for p in patterns), subject


def test_round_trip_through_an_event() -> None:
    message = group_events_pb2.MemberPaid(group_id="g1", member_id="m1", remaining_members=2)
    event = new_event("g1", message)
    assert event.event_type == "member.paid"
    assert event.aggregate_id == "g1"
    decoded = decode_event(event)
    assert decoded == message
    assert message_class("member.paid") is group_events_pb2.MemberPaid


def test_non_event_messages_are_refused() -> None:
    assert subject_of(group_pb2.GroupOrder) == ""
    with pytest.raises(UnknownEventTypeError):
        new_event("g1", group_pb2.GroupOrder(group_id="g1"))
    with pytest.raises(UnknownEventTypeError):
        message_class("group.nonexistent")
