"""Commands of the payment service: what a caller asks for, validated, with who asks.

The gRPC servicer turns each request into one of these and hands it, with a fresh unit of
work, to its handler in :mod:`payment_svc.service_layer.handlers`. The reconciler issues the
same commands as ``Caller(service="reconciler")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mppo.platform.identity import Caller


@dataclass(frozen=True)
class CreatePaymentIntent:
    """The payment of one member attempt (created with its hosted page, or replayed)."""

    caller: Caller
    group_id: str
    member_id: str
    attempt: int
    amount_minor: int
    currency_code: str
    provider: str
    description: str = ""
    return_url: str = ""
    payer_user_id: str = ""


@dataclass(frozen=True)
class GetPayment:
    """One payment, as far as the caller may see it."""

    caller: Caller
    payment_id: str


@dataclass(frozen=True)
class ListPayments:
    """One page of a group's payments the caller may see, oldest first: at most `page_size`
    payments after the payment `after` (a page token's position; "" from the start)."""

    caller: Caller
    group_id: str
    page_size: int = 100
    after: str = ""


@dataclass(frozen=True)
class CapturePayment:
    """Capture an authorized payment (all of the hold unless an amount is given)."""

    caller: Caller
    payment_id: str
    amount_minor: int | None = None


@dataclass(frozen=True)
class VoidPayment:
    """Release a hold (or close an unpaid checkout)."""

    caller: Caller
    payment_id: str
    reason: str = "void requested"


@dataclass(frozen=True)
class RefundPayment:
    """Refund captured money (everything left unless an amount is given).

    ``key`` makes a retry of the same refund safe (the caller's idempotency key); without one
    the key is derived from what was refunded before.
    """

    caller: Caller
    payment_id: str
    amount_minor: int | None = None
    reason: str = "refund requested"
    key: str = ""


@dataclass(frozen=True)
class CloseCheckout:
    """Close a payment's hosted checkout: its share is no longer wanted (the group service, before
    it announces the change)."""

    caller: Caller
    payment_id: str
    reason: str = "checkout closed"


@dataclass(frozen=True)
class SyncPayment:
    """Re-read a payment from its provider and apply what changed."""

    caller: Caller
    payment_id: str


@dataclass(frozen=True)
class HandleWebhook:
    """A provider webhook as received: the provider named by the path ("" for the
    Stripe-compatible default), the HTTP headers and the raw body."""

    provider: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReconcilePayment:
    """Compensate a payment of a closed group, or re-read it from its provider (reconciler)."""

    payment_id: str


@dataclass(frozen=True)
class WarnExpiringAuthorizations:
    """Announce the holds that lapse within the warning window (reconciler)."""

    limit: int


@dataclass(frozen=True)
class ClaimDuePayments:
    """Claim up to ``limit`` payments whose reconciliation check is due (reconciler): each
    one's next check is pushed out in the same transaction, so one replica handles it."""

    limit: int
