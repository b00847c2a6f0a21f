"""The registry of event types, read from the contracts themselves.

Each event payload message in proto/ names its subject with the option
`(mppo.common.v1.event_subject)`; this module maps subjects to message classes and back, so a
new event needs no registration code.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from types import ModuleType

from google.protobuf.message import Message

from mppo.common.v1 import event_pb2
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.events import Event

EVENT_MODULES: tuple[ModuleType, ...] = (group_events_pb2, payment_events_pb2, order_events_pb2)


class UnknownEventTypeError(KeyError):
    """No message in the contracts declares this subject."""


def subject_of(message_cls: type[Message]) -> str:
    """The subject a message class declares, or "" when it is not an event payload."""
    options = message_cls.DESCRIPTOR.GetOptions()
    return str(options.Extensions[event_pb2.event_subject])


@cache
def registry() -> Mapping[str, type[Message]]:
    """Every declared event type → its payload class."""
    found: dict[str, type[Message]] = {}
    for module in EVENT_MODULES:
        for name in module.DESCRIPTOR.message_types_by_name:
            cls: type[Message] = getattr(module, name)
            subject = subject_of(cls)
            if not subject:
                continue
            if subject in found:
                raise RuntimeError(f"{subject} is declared by {found[subject]} and {cls}")
            found[subject] = cls
    return found


def message_class(event_type: str) -> type[Message]:
    """The payload class of `event_type`; raises UnknownEventTypeError."""
    try:
        return registry()[event_type]
    except KeyError:
        raise UnknownEventTypeError(event_type) from None


def new_event(aggregate_id: str, message: Message) -> Event:
    """An Event for `message`, its type taken from the message's declared subject."""
    subject = subject_of(type(message))
    if not subject:
        raise UnknownEventTypeError(type(message).DESCRIPTOR.full_name)
    return Event.create(subject, aggregate_id, message)


def decode_event(event: Event) -> Message:
    """The typed payload of `event`."""
    message = message_class(event.event_type)()
    message.ParseFromString(event.payload)
    return message
