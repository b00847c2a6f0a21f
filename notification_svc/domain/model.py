"""What a notification is: its kind, channel, status, recipients and the facts it reports.

Pure values: the service layer turns events into :class:`Trigger` objects, plans one
notification per (event, recipient, channel) with :func:`plan`, stores each as a
:class:`Notification`, and the sender renders each one at delivery time (see
:mod:`notification_svc.domain.messages`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


class Kind(enum.StrEnum):
    """What a notification tells its recipient (names match the proto enum's suffixes)."""

    INVITATION = "INVITATION"
    REMINDER = "REMINDER"
    PAYMENT_RECEIVED = "PAYMENT_RECEIVED"
    GROUP_CONFIRMED = "GROUP_CONFIRMED"
    GROUP_EXPIRED = "GROUP_EXPIRED"
    GROUP_CANCELLED = "GROUP_CANCELLED"
    HOST_FALLBACK = "HOST_FALLBACK"


class Channel(enum.StrEnum):
    """How a notification is delivered."""

    EMAIL = "EMAIL"
    WEBHOOK = "WEBHOOK"


class Status(enum.StrEnum):
    """Delivery state; PENDING moves to SENT or FAILED and never back."""

    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


#: kinds whose message says what happened to the member's money
SETTLEMENT_KINDS = frozenset({Kind.GROUP_EXPIRED, Kind.GROUP_CANCELLED})


class Role(enum.StrEnum):
    """A member's role in the group."""

    HOST = "HOST"
    GUEST = "GUEST"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Contact:
    """How to reach one member. Personal data: never log it, never store it here."""

    member_id: str
    display_name: str
    email: str
    role: Role

    def __repr__(self) -> str:
        """Ids only, so a stray log of a contact leaks nothing."""
        return f"Contact(member_id={self.member_id!r}, role={self.role.value})"


@dataclass(frozen=True)
class Trigger:
    """One event's notification intent: what to say, to whom, with which (non-personal) facts.

    ``member_ids`` empty means "every member of the group". ``params`` holds only
    non-personal facts (amounts in minor units, currency, links, deadlines, ids, reasons);
    ``per_member`` adds facts that differ per recipient (e.g. each member's share and link).
    """

    kind: Kind
    group_id: str
    member_ids: Sequence[str] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    per_member: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Planned:
    """One notification to create: unique per (event, member, channel)."""

    kind: Kind
    group_id: str
    member_id: str
    channel: Channel
    params: Mapping[str, str]


def plan(trigger: Trigger, contacts: Sequence[Contact], *, webhook_enabled: bool) -> list[Planned]:
    """The notifications a trigger causes: e-mail to recipients with an address, and one
    webhook per recipient when the client app's webhook is configured.

    A named recipient the group does not know (removed, or a stale event) gets nothing.
    """
    by_id = {c.member_id: c for c in contacts}
    if trigger.member_ids:
        recipients = [by_id[m] for m in dict.fromkeys(trigger.member_ids) if m in by_id]
    else:
        recipients = list(contacts)
    planned: list[Planned] = []
    for contact in recipients:
        params = {**trigger.params, **trigger.per_member.get(contact.member_id, {})}
        params["role"] = contact.role.value
        if contact.email:
            planned.append(
                Planned(trigger.kind, trigger.group_id, contact.member_id, Channel.EMAIL, params)
            )
        if webhook_enabled:
            planned.append(
                Planned(trigger.kind, trigger.group_id, contact.member_id, Channel.WEBHOOK, params)
            )
    return planned


@dataclass(frozen=True)
class Notification:
    """One stored notification: ids, kind, channel, delivery state and non-personal facts."""

    notification_id: str
    event_id: str
    event_type: str
    group_id: str
    member_id: str
    kind: Kind
    channel: Channel
    status: Status
    params: dict[str, str]
    attempts: int
    last_error: str
    created_at: datetime
    sent_at: datetime | None


class Result(enum.StrEnum):
    """What one delivery round did with a row."""

    SENT = "SENT"  # delivered: SENT, one more attempt counted
    RETRY = "RETRY"  # failed: one more attempt counted, due again after a delay
    FAILED = "FAILED"  # failed for good (permanent, or the attempt budget is spent)
    DEFERRED = "DEFERRED"  # not ready (payments settling): no attempt, due again after a delay


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one row in a delivery round, recorded with the round's others."""

    notification_id: str
    result: Result
    error: str = ""
    delay_seconds: float = 0.0


class DeliveryError(Exception):
    """A delivery attempt failed. ``reason`` never holds personal data (it is stored and
    logged); ``permanent`` failures are not retried."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
