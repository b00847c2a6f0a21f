"""What callers ask the group service: one frozen dataclass per command or query.

The servicer builds them from validated requests (entrypoints/parsing.py), the expiry
scheduler from its clock; each carries who asks (`caller`, or `actor` for system work).
Handlers (service_layer/handlers.py) take one of these, or a consumed event payload, and a
unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import CartLine, FallbackPolicy, NewMember
from group_svc.domain.split import ShareSpec, SplitMode
from mppo.platform.identity import Caller


@dataclass(frozen=True)
class CartQuote:
    """What the merchant's catalogue agreed to, line by line (sku, quantity, unit price), in
    the cart's currency: the order service's QuoteCart answered for exactly these lines."""

    merchant_id: str
    currency_code: str
    lines: tuple[tuple[str, int, int], ...]

    @classmethod
    def of(cls, merchant_id: str, currency_code: str, items: Sequence[CartLine]) -> CartQuote:
        """The quote these lines need."""
        return cls(
            merchant_id,
            currency_code,
            tuple((i.sku, i.quantity, i.unit_price_minor) for i in items),
        )


@dataclass(frozen=True)
class CreateGroup:
    """A new DRAFT group from a cart; the caller becomes the host. `quote` is set once the
    merchant's catalogue priced the cart (`GroupHandlers.quote_cart`); a group is only created
    from a quoted cart."""

    caller: Caller
    merchant_id: str
    currency_code: str
    items: list[CartLine]
    fees_minor: int
    tax_minor: int
    tip_minor: int
    split_mode: SplitMode
    fallback_policy: FallbackPolicy
    #: None: the handlers' default span from now (MPPO_GROUP_DEFAULT_DEADLINE_SECONDS)
    deadline: datetime | None
    host: NewMember
    members: list[NewMember]
    quote: CartQuote | None = None

    @property
    def quoted(self) -> bool:
        """The merchant's catalogue priced exactly this cart."""
        return self.quote == CartQuote.of(self.merchant_id, self.currency_code, self.items)


@dataclass(frozen=True)
class GetGroup:
    """A group the caller may see."""

    caller: Caller
    group_id: str


@dataclass(frozen=True)
class ListGroups:
    """The caller's groups, newest first, after the cursor (created at, group id)."""

    caller: Caller
    page_size: int
    status: GroupStatus | None = None
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True)
class AddMembers:
    """The host adds guests to a DRAFT group."""

    caller: Caller
    group_id: str
    members: list[NewMember]


@dataclass(frozen=True)
class RemoveMember:
    """The host removes a guest from a DRAFT group."""

    caller: Caller
    group_id: str
    member_id: str


@dataclass(frozen=True)
class UpdateSplit:
    """The host changes the split of a DRAFT group (at `expected_version`, if not 0)."""

    caller: Caller
    group_id: str
    mode: SplitMode
    specs: dict[str, ShareSpec]
    #: the request entry of each member (``shares[i]``), for violations
    labels: dict[str, str]
    expected_version: int = 0


@dataclass(frozen=True)
class JoinGroup:
    """A user accepts an invitation."""

    caller: Caller
    group_id: str
    invite_token: str
    #: the provider the member names ("": none named)
    provider: str = ""


@dataclass(frozen=True)
class OpenGroup:
    """The host freezes the shares; the group opens once every payment intent exists."""

    caller: Caller
    group_id: str


@dataclass(frozen=True)
class RetryPayment:
    """A fresh attempt for a member whose payment failed (the member or the host asks)."""

    caller: Caller
    group_id: str
    member_id: str


@dataclass(frozen=True)
class ForceFinalize:
    """The host applies the deadline fallback now."""

    caller: Caller
    group_id: str


@dataclass(frozen=True)
class CancelGroup:
    """The host cancels a DRAFT or OPEN group."""

    caller: Caller
    group_id: str
    reason: str = ""


@dataclass(frozen=True)
class GetGroupHistory:
    """One page of the status changes of a group the caller may see: at most `page_size`
    after the change numbered `after` (a page token's position; 0 from the start)."""

    caller: Caller
    group_id: str
    page_size: int = 100
    after: int = 0


@dataclass(frozen=True)
class GetGroupContacts:
    """The members' contact details (our services only)."""

    caller: Caller
    group_id: str


@dataclass(frozen=True)
class CompleteIntents:
    """Request the planned payment intents of a group and publish what follows."""

    group_id: str
    actor: str


@dataclass(frozen=True)
class ExpireDueGroups:
    """Apply the fallback to groups past their deadline (or their host's grace period)."""

    actor: str = "system:scheduler"
    limit: int = 20


@dataclass(frozen=True)
class SendReminders:
    """`group.reminder_due` for groups close to their deadline."""

    limit: int = 20


@dataclass(frozen=True)
class ReleasePayments:
    """Void (or refund) payments the groups do not keep."""

    limit: int = 20
    #: first pause after a transient failure, doubling per attempt up to `max_backoff`
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
