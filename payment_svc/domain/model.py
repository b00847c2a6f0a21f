"""The Payment aggregate: a state machine that only moves forward and records what happened.

Pure Python. A provider's report (an `Observation`: status and amounts) is applied with
`Payment.observe`; steps the report skips are filled in (a payment seen CAPTURED while we still
had REQUIRES_ACTION was authorized first), so every state change yields its history row and
its event exactly once. Reports that are older than what we know change nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from mppo.platform.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError


class PaymentStatus(enum.Enum):
    """Our payment states (the proto's PaymentStatus without the prefix)."""

    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    VOIDED = "voided"
    FAILED = "failed"
    EXPIRED = "expired"


S = PaymentStatus
TERMINAL = frozenset({S.REFUNDED, S.VOIDED, S.FAILED, S.EXPIRED})
#: states in which the provider may still hold or have taken money
MONEY_STATES = frozenset({S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED})
#: the states each state may move to (directly); everything else is refused or filled in
NEXT: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.REQUIRES_ACTION: frozenset({S.AUTHORIZED, S.FAILED, S.EXPIRED, S.VOIDED}),
    S.AUTHORIZED: frozenset({S.CAPTURED, S.VOIDED, S.EXPIRED}),
    S.CAPTURED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.REFUNDED: frozenset(),
    S.VOIDED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
}
#: how far along the money path a state is (for "is this report older than ours?")
_RANK = {
    S.REQUIRES_ACTION: 0,
    S.AUTHORIZED: 1,
    S.FAILED: 1,
    S.EXPIRED: 2,
    S.VOIDED: 2,
    S.CAPTURED: 2,
    S.PARTIALLY_REFUNDED: 3,
    S.REFUNDED: 4,
}


@dataclass(frozen=True)
class Observation:
    """What a provider reports about a payment (from a webhook or a re-read)."""

    status: PaymentStatus
    amount_authorized_minor: int = 0
    amount_captured_minor: int = 0
    amount_refunded_minor: int = 0
    failure_reason: str = ""
    authorization_expires_at: datetime | None = None


@dataclass(frozen=True)
class PaymentEvent:
    """A fact to publish: kind is requested, succeeded, failed, captured, voided, refunded
    or authorization_expiring."""

    kind: str
    amount_minor: int = 0
    reason: str = ""
    captured: bool = False


@dataclass(frozen=True)
class StatusChange:
    """One row of payment_status_history."""

    from_status: PaymentStatus | None
    to_status: PaymentStatus
    reason: str
    actor: str


def ordering(current: PaymentStatus, reported: PaymentStatus, *, can_authorize: bool) -> str:
    """``"next"`` when ``reported`` directly follows ``current``, ``"stale"`` when it is not
    ahead of it (nothing to do), ``"ahead"`` when steps were skipped (re-read the provider)."""
    if current in TERMINAL:
        return "stale"
    if reported in NEXT[current] or (
        not can_authorize and current is S.REQUIRES_ACTION and reported is S.CAPTURED
    ):
        return "next"
    if _RANK[reported] <= _RANK[current]:
        return "stale"
    return "ahead"


@dataclass
class Payment:
    """One member's payment attempt for their share of a group."""

    payment_id: str
    group_id: str
    member_id: str
    attempt: int
    amount_minor: int
    currency_code: str
    provider: str
    status: PaymentStatus = S.REQUIRES_ACTION
    provider_payment_id: str = ""
    payment_link: str = ""
    description: str = ""
    #: the provider's id for the checkout we created (never changes once set): a webhook's
    #: provider id we have not seen is accepted only if the provider lists it on this checkout
    provider_checkout_id: str = ""
    amount_authorized_minor: int = 0
    amount_captured_minor: int = 0
    amount_refunded_minor: int = 0
    failure_reason: str = ""
    authorization_expires_at: datetime | None = None
    can_authorize: bool = True
    #: when the payments row was created and last written (set by the repository)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[PaymentEvent] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)

    # commands --------------------------------------------------------------------------------
    def attach_checkout(self, provider_payment_id: str, link: str, checkout_id: str = "") -> None:
        """The provider created the hosted page: record it and announce the request."""
        if self.provider_payment_id:
            return
        self.provider_payment_id = provider_payment_id
        self.provider_checkout_id = checkout_id or provider_payment_id
        self.payment_link = link
        self.changes.append(StatusChange(None, S.REQUIRES_ACTION, "intent created", "payment"))
        self.events.append(PaymentEvent("requested", self.amount_minor))

    def capture_amount(self, requested: int | None) -> int:
        """How much a capture takes (all of the hold unless ``requested``); refuses when the
        payment is not authorized."""
        if self.status is not S.AUTHORIZED:
            raise FailedPreconditionError(
                f"payment is {self.status.value}, only an authorized payment can be captured",
                reason="PAYMENT_NOT_AUTHORIZED",
            )
        held = self.amount_authorized_minor or self.amount_minor
        amount = held if requested is None else requested
        if not 0 < amount <= held:
            raise InvalidArgumentError(
                "capture amount out of range",
                [FieldViolation("amount.amount_minor", f"between 1 and {held}")],
            )
        return amount

    def refund_amount(self, requested: int | None) -> int:
        """How much a refund returns (everything left unless ``requested``)."""
        if self.status not in (S.CAPTURED, S.PARTIALLY_REFUNDED):
            raise FailedPreconditionError(
                f"payment is {self.status.value}, only captured money can be refunded",
                reason="PAYMENT_NOT_CAPTURED",
            )
        left = self.amount_captured_minor - self.amount_refunded_minor
        amount = left if requested is None else requested
        if not 0 < amount <= left:
            raise InvalidArgumentError(
                "refund amount out of range",
                [FieldViolation("amount.amount_minor", f"between 1 and {left}")],
            )
        return amount

    def ensure_voidable(self) -> None:
        """Refuse a void unless the payment is authorized or not yet paid."""
        if self.status not in (S.AUTHORIZED, S.REQUIRES_ACTION):
            raise FailedPreconditionError(
                f"payment is {self.status.value}, only a hold or an unpaid payment can be voided",
                reason="PAYMENT_NOT_VOIDABLE",
            )

    def warn_authorization_expiring(self) -> None:
        """Record the warning that the hold lapses soon."""
        self.events.append(PaymentEvent("authorization_expiring"))

    # provider reports ------------------------------------------------------------------------
    def observe(
        self,
        seen: Observation,
        *,
        reason: str,
        actor: str,
        hold_until: datetime | None = None,
    ) -> bool:
        """Apply a provider report, moving only forward; True when anything changed. A hold
        lapses at the earliest time known for it: the provider's own lapse time (Stripe's
        ``capture_before``, often only seen when the payment is re-read, not in the webhook
        that announced the hold) or `hold_until` (the provider's configured hold window from
        now, e.g. PayPal honors a hold 3 of the 29 days it stays valid); a lapse time never
        moves later."""
        lapse_before = self.authorization_expires_at
        self._lapses_by(seen.authorization_expires_at)
        before = (self.status, self.amount_refunded_minor, self.amount_captured_minor)
        target = seen.status
        if ordering(self.status, target, can_authorize=self.can_authorize) != "stale":
            for step in self._path_to(target):
                self._enter(step, seen, reason, actor)
        if self.status is S.AUTHORIZED:
            self._lapses_by(hold_until)
        after = (self.status, self.amount_refunded_minor, self.amount_captured_minor)
        return before != after or lapse_before != self.authorization_expires_at

    def _lapses_by(self, moment: datetime | None) -> None:
        """The hold lapses at `moment` if that is sooner than what is known."""
        if moment is not None and (
            self.authorization_expires_at is None or moment < self.authorization_expires_at
        ):
            self.authorization_expires_at = moment

    def _path_to(self, target: PaymentStatus) -> list[PaymentStatus]:
        """The states between ours and ``target``, both ends excluded/included."""
        chain = [S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED]
        if target in (S.FAILED, S.EXPIRED, S.VOIDED) or self.status is target:
            return [target]
        if not self.can_authorize and self.status is S.REQUIRES_ACTION:
            chain.remove(S.AUTHORIZED)
        start = chain.index(self.status) if self.status in chain else 0
        end = chain.index(target)
        path = chain[start + 1 : end + 1]
        if target is S.REFUNDED and S.PARTIALLY_REFUNDED in path:
            path.remove(S.PARTIALLY_REFUNDED)
        return path

    def _enter(self, step: PaymentStatus, seen: Observation, reason: str, actor: str) -> None:
        previous = self.status
        if step is S.AUTHORIZED:
            self.amount_authorized_minor = seen.amount_authorized_minor or self.amount_minor
            self.events.append(PaymentEvent("succeeded", self.amount_authorized_minor))
        elif step is S.CAPTURED:
            captured = (
                seen.amount_captured_minor or self.amount_authorized_minor or self.amount_minor
            )
            self.amount_captured_minor = captured
            if previous is S.REQUIRES_ACTION:
                self.amount_authorized_minor = captured
                self.events.append(PaymentEvent("succeeded", captured, captured=True))
            self.events.append(PaymentEvent("captured", captured))
        elif step in (S.PARTIALLY_REFUNDED, S.REFUNDED):
            if self.amount_captured_minor == 0:
                self.amount_captured_minor = seen.amount_captured_minor or self.amount_minor
            total = seen.amount_refunded_minor
            if step is S.REFUNDED:
                total = max(total, self.amount_captured_minor)
            delta = total - self.amount_refunded_minor
            if delta <= 0:
                return
            self.amount_refunded_minor = total
            self.events.append(PaymentEvent("refunded", delta, reason))
        elif step is S.VOIDED:
            self.events.append(PaymentEvent("voided", self.amount_authorized_minor, reason))
        elif step in (S.FAILED, S.EXPIRED):
            self.failure_reason = seen.failure_reason or reason or step.value
            if previous is S.REQUIRES_ACTION or step is S.FAILED:
                self.events.append(PaymentEvent("failed", 0, self.failure_reason))
            else:
                self.events.append(PaymentEvent("voided", self.amount_authorized_minor, "expired"))
        if step is not previous:
            self.changes.append(StatusChange(previous, step, reason, actor))
        self.status = step
