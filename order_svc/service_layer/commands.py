"""The order service's commands and queries: what a caller asks for, in domain terms.

The gRPC servicer builds these from requests (and the caller's identity from metadata); the
handlers in handlers.py carry them out. Events consumed (`group.finalized`) arrive as their
contract payload instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from mppo.platform.identity import Caller
from order_svc.domain.model import Line


@dataclass(frozen=True)
class ShareSpec:
    """One member's secured payment, as the group finalized it (amount in `currency`)."""

    member_id: str
    payment_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class OrderSpec:
    """What a finalized group orders: the same fields in group.finalized and CreateOrder."""

    group_id: str
    merchant_id: str
    currency: str
    total_minor: int
    fees_minor: int
    tax_minor: int
    tip_minor: int
    lines: tuple[Line, ...]
    shares: tuple[ShareSpec, ...]


@dataclass(frozen=True)
class CreateOrder:
    """Record the group's order (once per group) and start placing it; services only."""

    caller: Caller
    order: OrderSpec


@dataclass(frozen=True)
class GetOrder:
    """One order, for a member of its group (or one of our services)."""

    caller: Caller
    order_id: str


@dataclass(frozen=True)
class GetOrderByGroup:
    """The group's order, for a member of the group (or one of our services)."""

    caller: Caller
    group_id: str


@dataclass(frozen=True)
class QuoteCart:
    """Price a cart against its merchant's catalogue before a group is created (services
    only)."""

    caller: Caller
    merchant_id: str
    currency: str
    lines: tuple[Line, ...]
