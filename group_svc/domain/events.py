"""What happened to a group, as the aggregate records it (pure; no protobuf).

`Group` appends these to `group.events`; the unit of work drains them on commit and
`adapters.event_mapping.to_outbox` turns each into the published event (payloads in
proto/mppo/group/v1/group_events.proto). Values that may change later in the same
transaction are captured when the event is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Created:
    """group.created"""


@dataclass(frozen=True)
class MemberAdded:
    """member.added"""

    member_id: str


@dataclass(frozen=True)
class MemberRemoved:
    """member.removed"""

    member_id: str


@dataclass(frozen=True)
class Opened:
    """group.opened: one invitation per paying member."""


@dataclass(frozen=True)
class MemberPaid:
    """member.paid"""

    member_id: str
    payment_id: str
    amount_minor: int
    remaining_members: int


@dataclass(frozen=True)
class FullyPaid:
    """group.fully_paid"""


@dataclass(frozen=True)
class Finalized:
    """group.finalized: what the order service needs to place and capture the order."""


@dataclass(frozen=True)
class Expired:
    """group.expired, with the payments whose holds must be released."""

    payment_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Cancelled:
    """group.cancelled, with the payments whose holds must be released."""

    payment_ids: tuple[str, ...]
    reason: str
    actor: str


@dataclass(frozen=True)
class Confirmed:
    """group.confirmed"""

    order_id: str


@dataclass(frozen=True)
class HostFallback:
    """group.host_fallback: the host's new share, payment link and grace deadline."""


@dataclass(frozen=True)
class ReminderDue:
    """group.reminder_due for one unpaid member."""

    member_id: str


GroupEvent = (
    Created
    | MemberAdded
    | MemberRemoved
    | Opened
    | MemberPaid
    | FullyPaid
    | Finalized
    | Expired
    | Cancelled
    | Confirmed
    | HostFallback
    | ReminderDue
)
