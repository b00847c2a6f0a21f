"""What happened to a member's money when their group expired or was cancelled.

Decided from the payment facts the service has seen (member.paid, payment.succeeded,
payment.captured, payment.voided, payment.refunded): a hold that was voided is "released",
a capture that was refunded is "refunded". While a secured payment is not settled yet the
sender waits (up to a settle window) so the message can state the final outcome; after that
it says the release or refund is under way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """The money outcome stated in an expiry or cancellation notice."""

    NOTHING_CHARGED = "NOTHING_CHARGED"
    HOLD_RELEASED = "HOLD_RELEASED"
    REFUNDED = "REFUNDED"
    HOLD_RELEASE_PENDING = "HOLD_RELEASE_PENDING"
    REFUND_PENDING = "REFUND_PENDING"


SETTLED = frozenset({Outcome.NOTHING_CHARGED, Outcome.HOLD_RELEASED, Outcome.REFUNDED})


@dataclass(frozen=True)
class PaymentFacts:
    """What is known about one payment of a member."""

    payment_id: str
    secured: bool = False
    captured: bool = False
    voided: bool = False
    refunded: bool = False
    amount_minor: int = 0
    currency: str = ""


def outcome_for(payments: Iterable[PaymentFacts]) -> Outcome:
    """The member's outcome: refunds dominate releases; anything unsettled is pending.

    Only payments that secured money count: a payment voided without ever being secured
    (an unpaid intent cancelled at expiry) charged nothing.
    """
    relevant = [p for p in payments if p.secured or p.captured or p.refunded]
    if not relevant:
        return Outcome.NOTHING_CHARGED
    pending_refund = any(p.captured and not p.refunded for p in relevant)
    pending_release = any(
        not p.captured and not p.voided and not p.refunded and p.secured for p in relevant
    )
    if pending_refund:
        return Outcome.REFUND_PENDING
    if pending_release:
        return Outcome.HOLD_RELEASE_PENDING
    if any(p.refunded for p in relevant):
        return Outcome.REFUNDED
    return Outcome.HOLD_RELEASED
