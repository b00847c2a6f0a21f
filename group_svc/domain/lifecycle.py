"""The group state machine: which status may follow which (docs/lifecycle.md is drawn from it).

    DRAFT ──► OPEN ──► PENDING ──► CONFIRMED
      │        │ ↺ OPEN (the hold policy brings the deadline forward: a history row only)
      │        │          │
      │        ├──► EXPIRED (deadline passed; the fallback did not rescue it)
      ├──► EXPIRED (deadline passed before the host opened the group)
      └────────┴──────────┴──► CANCELLED (host cancel from DRAFT/OPEN; order failed from PENDING)

CONFIRMED, EXPIRED and CANCELLED are terminal. Anything else is an illegal transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from mppo.platform.errors import FailedPreconditionError


class GroupStatus(StrEnum):
    """Lifecycle state of a group order."""

    DRAFT = "DRAFT"
    OPEN = "OPEN"
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


TRANSITIONS: Mapping[GroupStatus, frozenset[GroupStatus]] = {
    GroupStatus.DRAFT: frozenset({GroupStatus.OPEN, GroupStatus.EXPIRED, GroupStatus.CANCELLED}),
    # OPEN → OPEN: the hold policy brings the deadline forward (`Group.hold_lapsing`, a history
    # row by system:holds), or HOST_PAYS_REMAINING hands the host the rest and their grace
    # (`Group.apply_fallback`); the group stays OPEN
    GroupStatus.OPEN: frozenset(
        {GroupStatus.OPEN, GroupStatus.PENDING, GroupStatus.EXPIRED, GroupStatus.CANCELLED}
    ),
    GroupStatus.PENDING: frozenset({GroupStatus.CONFIRMED, GroupStatus.CANCELLED}),
    GroupStatus.CONFIRMED: frozenset(),
    GroupStatus.EXPIRED: frozenset(),
    GroupStatus.CANCELLED: frozenset(),
}

TERMINAL: frozenset[GroupStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

#: the actors of the history rows the services write themselves (a user's row names
#: ``user:<id>``, a service's ``service:<name>``); the members' group page tells why a group
#: ended from them (gateway/group_page.py)
ORDERS_ACTOR = "system:orders"
PAYMENTS_ACTOR = "system:payments"
HOLDS_ACTOR = "system:holds"


def can_transition(source: GroupStatus, target: GroupStatus) -> bool:
    """Whether `source → target` is a legal move."""
    return target in TRANSITIONS[source]


def check_transition(source: GroupStatus, target: GroupStatus) -> None:
    """Raise FailedPreconditionError (reason ILLEGAL_TRANSITION) unless the move is legal."""
    if not can_transition(source, target):
        raise FailedPreconditionError(
            f"a group in {source} cannot become {target}", reason="ILLEGAL_TRANSITION"
        )
