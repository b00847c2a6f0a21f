"""The group order aggregate: cart, members, shares, payments and lifecycle.

Pure Python. The service layer loads a `Group` (under a row lock), calls one method and saves
it; the methods record what happened in `group.events` (domain/events.py), which the unit of
work publishes on commit. Every status change goes through `Group.transition`, which checks the
state machine and records a history entry; every member status change through
`Member.move_to`, which checks `MEMBER_TRANSITIONS`.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from group_svc.domain import events as ev
from group_svc.domain.lifecycle import (
    ORDERS_ACTOR,
    PAYMENTS_ACTOR,
    GroupStatus,
    check_transition,
)
from group_svc.domain.split import Line, ShareSpec, SplitMode, compute_shares
from mppo.platform.errors import (
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
)
from mppo.platform.money import format_minor
from mppo.platform.providers import ProviderChoice

#: Most members a group may have, the host included (documented limit; requests over it get
#: INVALID_ARGUMENT).
MAX_MEMBERS = 50


class Role(StrEnum):
    """Host or guest."""

    HOST = "HOST"
    GUEST = "GUEST"


class MemberStatus(StrEnum):
    """A member's invitation and payment state."""

    INVITED = "INVITED"
    JOINED = "JOINED"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    PAID = "PAID"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    COVERED_BY_HOST = "COVERED_BY_HOST"


#: the statuses a member starts in: a guest INVITED (added by the host), the host JOINED
MEMBER_STARTS: frozenset[MemberStatus] = frozenset({MemberStatus.INVITED, MemberStatus.JOINED})

#: which member status may follow which (docs/lifecycle.md is drawn from it); `Member.move_to`
#: refuses anything else. The group moves its members as a side effect of its own moves:
MEMBER_TRANSITIONS: Mapping[MemberStatus, frozenset[MemberStatus]] = {
    # joining with the invite token; the group opened with a share the guest owes
    MemberStatus.INVITED: frozenset({MemberStatus.JOINED, MemberStatus.AWAITING_PAYMENT}),
    # the group opened with a share they owe; the host (share 0) takes over the rest
    MemberStatus.JOINED: frozenset({MemberStatus.AWAITING_PAYMENT}),
    # paid (or the fallback keeps what they paid as their share), declined, or the fallback
    # moves their share to the host
    MemberStatus.AWAITING_PAYMENT: frozenset(
        {MemberStatus.PAID, MemberStatus.PAYMENT_FAILED, MemberStatus.COVERED_BY_HOST}
    ),
    # a new attempt (retry, another provider, the host's fallback attempt); or the fallback
    # as for AWAITING_PAYMENT
    MemberStatus.PAYMENT_FAILED: frozenset(
        {MemberStatus.AWAITING_PAYMENT, MemberStatus.PAID, MemberStatus.COVERED_BY_HOST}
    ),
    # the host who had paid their own share owes the rest the fallback moved to them
    MemberStatus.PAID: frozenset({MemberStatus.AWAITING_PAYMENT}),
    MemberStatus.COVERED_BY_HOST: frozenset(),
}


class FallbackPolicy(StrEnum):
    """What happens at the deadline without full payment."""

    HOST_PAYS_REMAINING = "HOST_PAYS_REMAINING"
    CANCEL = "CANCEL"


class AttemptStatus(StrEnum):
    """One payment attempt as the group sees it."""

    REQUESTED = "REQUESTED"  # intent asked for (payment_id set once the payment service answered)
    SUCCEEDED = "SUCCEEDED"  # secured and counted towards the member's share
    FAILED = "FAILED"  # declined
    SUPERSEDED = "SUPERSEDED"  # replaced by a newer attempt before it succeeded
    REJECTED = "REJECTED"  # succeeded, but too late or not needed: it must be voided


class FallbackOutcome(StrEnum):
    """What the deadline fallback did."""

    EXPIRED = "EXPIRED"
    HOST_COVERS = "HOST_COVERS"


class PaymentOutcome(StrEnum):
    """What the group did with a `payment.succeeded`."""

    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    REJECTED = "REJECTED"  # the caller must make sure the money is released


@dataclass(frozen=True)
class CartLine:
    """A cart line."""

    line_id: str
    sku: str
    name: str
    quantity: int
    unit_price_minor: int

    @property
    def cost_minor(self) -> int:
        """Quantity times unit price."""
        return self.quantity * self.unit_price_minor


@dataclass
class Member:
    """One participant."""

    member_id: str
    position: int
    role: Role
    display_name: str
    email: str
    phone: str
    user_id: str
    share_spec: ShareSpec
    status: MemberStatus
    invite_token: str
    share_minor: int = 0
    paid_minor: int = 0
    required: bool = True
    attempt: int = 0
    joined_at: datetime | None = None
    paid_at: datetime | None = None
    #: the provider the member pays with ("": the payment service's default)
    provider: str = ""

    @property
    def secured(self) -> bool:
        """The member owes nothing more."""
        return self.paid_minor >= self.share_minor

    def move_to(self, target: MemberStatus) -> None:
        """Set the member's status along `MEMBER_TRANSITIONS` (staying in the same status is
        no move); InternalError for a move outside the table (a bug: nothing is changed)."""
        if target is self.status:
            return
        if target not in MEMBER_TRANSITIONS[self.status]:
            raise InternalError(
                f"member {self.member_id}: status {self.status} cannot become {target}"
            )
        self.status = target


@dataclass
class PaymentAttempt:
    """One payment intent requested for a member."""

    member_id: str
    attempt: int
    amount_minor: int
    status: AttemptStatus = AttemptStatus.REQUESTED
    payment_id: str = ""
    payment_link: str = ""
    captured: bool = False
    row_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class HistoryEntry:
    """One status transition."""

    from_status: GroupStatus | None
    to_status: GroupStatus
    reason: str
    actor: str
    at: datetime


@dataclass(frozen=True)
class NewMember:
    """A member to add, as the request gave it."""

    display_name: str
    email: str
    phone: str
    user_id: str
    share_spec: ShareSpec
    #: the provider the member prefers ("": the payment service's default)
    provider: str = ""


@dataclass
class Group:
    """A cart paid for by several people."""

    group_id: str
    host_user_id: str
    merchant_id: str
    currency_code: str
    items: list[CartLine]
    fees_minor: int
    tax_minor: int
    tip_minor: int
    split_mode: SplitMode
    fallback_policy: FallbackPolicy
    deadline: datetime
    created_at: datetime
    updated_at: datetime
    status: GroupStatus = GroupStatus.DRAFT
    members: list[Member] = field(default_factory=list)
    attempts: list[PaymentAttempt] = field(default_factory=list)
    version: int = 0
    frozen_at: datetime | None = None
    order_id: str = ""
    close_reason: str = ""
    grace_deadline: datetime | None = None
    fallback_at: datetime | None = None
    fallback_notified_at: datetime | None = None
    reminder_sent_at: datetime | None = None
    #: why the group became due before its deadline (a hold about to lapse); "" otherwise
    due_reason: str = ""
    new_history: list[HistoryEntry] = field(default_factory=list)
    removed_member_ids: list[str] = field(default_factory=list)
    #: recorded domain events, drained (and published) by the unit of work on commit
    events: list[ev.GroupEvent] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        group_id: str,
        host_user_id: str,
        merchant_id: str,
        currency_code: str,
        items: list[CartLine],
        fees_minor: int,
        tax_minor: int,
        tip_minor: int,
        split_mode: SplitMode,
        fallback_policy: FallbackPolicy,
        deadline: datetime,
        host: NewMember,
        members: Sequence[NewMember],
        actor: str,
        now: datetime,
    ) -> Group:
        """A new DRAFT group with its host (bound to `host_user_id`) and invited guests."""
        check_member_list(
            [(host.email, host_user_id), *[(m.email, m.user_id) for m in members]], skip=1
        )
        group = cls(
            group_id=group_id,
            host_user_id=host_user_id,
            merchant_id=merchant_id,
            currency_code=currency_code,
            items=items,
            fees_minor=fees_minor,
            tax_minor=tax_minor,
            tip_minor=tip_minor,
            split_mode=split_mode,
            fallback_policy=fallback_policy,
            deadline=deadline,
            created_at=now,
            updated_at=now,
        )
        group.events.append(ev.Created())
        owner = Member(
            member_id=str(uuid.uuid4()),
            position=0,
            role=Role.HOST,
            display_name=host.display_name,
            email=host.email,
            phone=host.phone,
            user_id=host_user_id,
            share_spec=host.share_spec,
            status=MemberStatus.JOINED,
            provider=host.provider,
            invite_token=secrets.token_urlsafe(24),
            joined_at=now,
        )
        group.members.append(owner)
        group.events.append(ev.MemberAdded(owner.member_id))
        group.add_members(members, now, "members", recompute=False)
        group.recompute_shares(
            ["host.share_spec", *(f"members[{i}].share_spec" for i in range(len(members)))]
        )
        group.new_history.append(HistoryEntry(None, GroupStatus.DRAFT, "group created", actor, now))
        return group

    # ---- reading -----------------------------------------------------------------------

    @property
    def total_minor(self) -> int:
        """Items plus fees, tax and tip."""
        items = sum(line.cost_minor for line in self.items)
        return items + self.fees_minor + self.tax_minor + self.tip_minor

    @property
    def host(self) -> Member:
        """The host's member entry."""
        return next(m for m in self.members if m.role is Role.HOST)

    def member(self, member_id: str) -> Member:
        """The member with this id; NotFoundError otherwise."""
        for m in self.members:
            if m.member_id == member_id:
                return m
        raise NotFoundError(f"member {member_id} is not in group {self.group_id}")

    def member_of_user(self, user_id: str) -> Member | None:
        """The member bound to `user_id`, if any."""
        if not user_id:
            return None
        return next((m for m in self.members if m.user_id == user_id), None)

    def is_visible_to(self, user_id: str) -> bool:
        """The host and bound members may see the group."""
        return user_id == self.host_user_id or self.member_of_user(user_id) is not None

    def current_attempt(self, member: Member) -> PaymentAttempt | None:
        """The member's latest payment attempt."""
        return self.attempt_of(member.member_id, member.attempt)

    def attempt_of(self, member_id: str, attempt: int) -> PaymentAttempt | None:
        """A given attempt of a member."""
        return next(
            (a for a in self.attempts if a.member_id == member_id and a.attempt == attempt), None
        )

    def attempt_by_payment(self, payment_id: str) -> PaymentAttempt | None:
        """The attempt that holds `payment_id`."""
        return next((a for a in self.attempts if a.payment_id == payment_id), None)

    def attempts_missing_intent(self) -> list[PaymentAttempt]:
        """Requested attempts the payment service has not answered yet."""
        return [
            a for a in self.attempts if a.status is AttemptStatus.REQUESTED and not a.payment_id
        ]

    @property
    def amount_secured(self) -> int:
        """Sum of the secured payments."""
        return sum(a.amount_minor for a in self.attempts if a.status is AttemptStatus.SUCCEEDED)

    @property
    def fully_paid(self) -> bool:
        """Every required share is secured."""
        return all(m.secured for m in self.members if m.required)

    @property
    def unpaid_required(self) -> list[Member]:
        """Required members who still owe something."""
        return [m for m in self.members if m.required and not m.secured]

    @property
    def payment_ids(self) -> list[str]:
        """Every payment id the group ever asked for."""
        return [a.payment_id for a in self.attempts if a.payment_id]

    def live_checkouts(self) -> set[str]:
        """The payments whose hosted pages may still be paid for this group: each member's
        current attempt, requested or failed (a provider's page may take another card after a
        decline), while the group is DRAFT or OPEN and the host has not taken the share over.

        A change that drops a payment from this set (fallback, cancel, expiry, a retry that
        replaces the link) leaves its checkout unwanted: the service layer has it closed at the
        payment service before the change is committed."""
        if self.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
            return set()
        live: set[str] = set()
        for member in self.members:
            if member.status is MemberStatus.COVERED_BY_HOST:
                continue
            attempt = self.current_attempt(member)
            if (
                attempt is not None
                and attempt.payment_id
                and attempt.status in (AttemptStatus.REQUESTED, AttemptStatus.FAILED)
            ):
                live.add(attempt.payment_id)
        return live

    def is_due(self, now: datetime) -> bool:
        """DRAFT/OPEN past the deadline, or past the host's grace period once the host covers
        the rest: the fallback applies (the repository's `claim_due` selects the same)."""
        if self.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
            return False
        if self.grace_deadline is not None and self.grace_deadline <= now:
            return True
        return self.fallback_at is None and self.deadline <= now

    # ---- lifecycle ---------------------------------------------------------------------

    def transition(self, target: GroupStatus, reason: str, actor: str, now: datetime) -> None:
        """Move to `target` (FailedPreconditionError if illegal) and record it."""
        check_transition(self.status, target)
        self.new_history.append(HistoryEntry(self.status, target, reason, actor, now))
        self.status = target
        self.updated_at = now

    def _require_editable(self) -> None:
        if self.status is not GroupStatus.DRAFT:
            raise FailedPreconditionError(
                f"the group is {self.status}; members and split change only in DRAFT",
                reason="GROUP_NOT_DRAFT",
            )
        if self.frozen_at is not None:
            raise FailedPreconditionError(
                "the group is being opened; its shares are frozen", reason="GROUP_FROZEN"
            )

    def recompute_shares(self, labels: Sequence[str] | None = None) -> None:
        """Apply the split calculator to the current members."""
        lines = [Line(line.line_id, line.cost_minor) for line in self.items]
        shares = compute_shares(
            self.split_mode,
            self.total_minor,
            [m.share_spec for m in self.members],
            lines,
            labels,
        )
        for member, share in zip(self.members, shares, strict=True):
            member.share_minor = share

    def add_members(
        self, new: Sequence[NewMember], now: datetime, field_name: str, recompute: bool = True
    ) -> list[Member]:
        """Add guests (DRAFT only); shares are recomputed (unless the caller does it)."""
        self._require_editable()
        check_member_list(
            [*[(m.email, m.user_id) for m in self.members], *[(n.email, n.user_id) for n in new]],
            skip=len(self.members),
            field_name=field_name,
        )
        position = max((m.position for m in self.members), default=-1) + 1
        added: list[Member] = []
        for offset, spec in enumerate(new):
            added.append(
                Member(
                    member_id=str(uuid.uuid4()),
                    position=position + offset,
                    role=Role.GUEST,
                    display_name=spec.display_name,
                    email=spec.email,
                    phone=spec.phone,
                    user_id=spec.user_id,
                    share_spec=spec.share_spec,
                    status=MemberStatus.INVITED,
                    provider=spec.provider,
                    invite_token=secrets.token_urlsafe(24),
                )
            )
        self.members.extend(added)
        self.events.extend(ev.MemberAdded(m.member_id) for m in added)
        if recompute:
            self.recompute_shares([f"members[{i}].share_spec" for i in range(len(self.members))])
        self.updated_at = now
        return added

    def remove_member(self, member_id: str, now: datetime) -> Member:
        """Remove a guest (DRAFT only); shares are recomputed."""
        self._require_editable()
        member = self.member(member_id)
        if member.role is Role.HOST:
            raise FailedPreconditionError("the host cannot be removed", reason="HOST_NOT_REMOVABLE")
        self.members.remove(member)
        self.removed_member_ids.append(member_id)
        self.events.append(ev.MemberRemoved(member_id))
        self.recompute_shares()
        self.updated_at = now
        return member

    def update_split(
        self, mode: SplitMode, specs: dict[str, ShareSpec], labels: dict[str, str], now: datetime
    ) -> None:
        """Change the split mode and parameters (DRAFT only). `labels` name each member's
        entry in the request (``shares[i]``): an unknown member is reported on the entry's
        ``member_id``, a bad split parameter on its ``share_spec``."""
        self._require_editable()
        unknown = [
            member_id for member_id in specs if member_id not in {m.member_id for m in self.members}
        ]
        if unknown:
            raise InvalidArgumentError(
                "unknown members in the split",
                [
                    FieldViolation(f"{labels[u]}.member_id", "not a member of the group")
                    for u in unknown
                ],
            )
        if mode is not SplitMode.EQUAL:
            missing = [m for m in self.members if m.member_id not in specs]
            if missing:
                raise InvalidArgumentError(
                    "every member needs a share parameter",
                    [FieldViolation("shares", f"missing member {m.member_id}") for m in missing],
                )
        for m in self.members:
            m.share_spec = specs.get(m.member_id, ShareSpec())
        self.split_mode = mode
        self.recompute_shares(
            [
                f"{labels[m.member_id]}.share_spec" if m.member_id in labels else "shares"
                for m in self.members
            ]
        )
        self.updated_at = now

    def join(self, invite_token: str, user_id: str, now: datetime) -> Member:
        """Bind `user_id` to the member slot holding `invite_token`."""
        if self.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
            raise FailedPreconditionError(f"the group is {self.status}", reason="GROUP_CLOSED")
        member = next(
            (m for m in self.members if secrets.compare_digest(m.invite_token, invite_token)), None
        )
        if member is None:
            raise NotFoundError("no such invitation", reason="INVITATION_NOT_FOUND")
        if member.user_id and member.user_id != user_id:
            raise FailedPreconditionError(
                "this invitation was accepted by someone else", reason="INVITATION_USED"
            )
        other = self.member_of_user(user_id)
        if other is not None and other is not member:
            raise FailedPreconditionError(
                "you are already a member of this group", reason="ALREADY_MEMBER"
            )
        member.user_id = user_id
        if member.joined_at is None:
            member.joined_at = now
        if member.status is MemberStatus.INVITED:
            member.move_to(MemberStatus.JOINED)
        self.updated_at = now
        return member

    def check_holds(
        self,
        providers: ProviderChoice,
        now: datetime,
        field_name: str = "deadline",
        *,
        margin: timedelta = timedelta(0),
        host_grace: timedelta = timedelta(0),
    ) -> None:
        """Refuse a deadline the holds of the providers in play cannot outlast: a share paid now
        must still be held, `margin` to spare (the hold policy's: `hold_lapsing`), when the
        group completes: at its deadline, or the host's grace later under HOST_PAYS_REMAINING.
        So no hold placed after creation ever makes a group end before its deadline
        (InvalidArgumentError naming `field_name`). Only DRAFT and OPEN groups are checked."""
        if self.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
            return
        name, window = providers.shortest_window(m.provider for m in self.members)
        after = self._needs_after_due(margin, host_grace)
        latest = window - after
        if self.deadline - now > latest:
            grace = after - margin
            needs = (
                f"the group must complete {_span(margin)} before a hold lapses"
                if grace <= timedelta(0)
                else f"after the deadline the host has {_span(grace)} of grace to pay the rest"
                f" and the group must complete {_span(margin)} before a hold lapses"
            )
            raise InvalidArgumentError(
                f"the deadline is further away than {name} holds a payment ({_span(window)}),"
                f" less {_span(after)} for the group to complete",
                [
                    FieldViolation(
                        field_name,
                        f"at most {_span(max(latest, timedelta(0)))} from now: {name} holds a"
                        f" payment {_span(window)}, and {needs}",
                    )
                ],
                reason="DEADLINE_BEYOND_HOLD",
            )

    def _needs_after_due(self, margin: timedelta, host_grace: timedelta) -> timedelta:
        """How long after it is due (its deadline, or the host's grace deadline once the host
        covers the rest) the group may still need a hold: `margin` for the order to capture,
        and under HOST_PAYS_REMAINING before the fallback applied also the host's grace (the
        host pays after the deadline)."""
        if (
            self.grace_deadline is None
            and self.fallback_policy is FallbackPolicy.HOST_PAYS_REMAINING
        ):
            return margin + host_grace
        return margin

    def choose_provider(self, member: Member, provider: str, changes: bool) -> bool:
        """The member pays with `provider` from now on (`changes`: it is not the provider of
        their current link). True when their unpaid payment link must be replaced by a new
        attempt at that provider (the group has planned their payment already)."""
        if not changes:
            return False
        if self.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
            raise FailedPreconditionError(f"the group is {self.status}", reason="GROUP_CLOSED")
        if member.secured and member.required:
            raise FailedPreconditionError(
                "the member's share is paid already; the provider cannot change",
                reason="ALREADY_PAID",
            )
        if member.status is MemberStatus.COVERED_BY_HOST:
            raise FailedPreconditionError("the host covers this share", reason="COVERED_BY_HOST")
        member.provider = provider
        current = self.current_attempt(member)
        if self.frozen_at is None or current is None or not member.required:
            return False
        if current.status not in (AttemptStatus.REQUESTED, AttemptStatus.FAILED):
            return False
        self._new_attempt(member, member.share_minor - member.paid_minor)
        if self.status is GroupStatus.OPEN:
            member.move_to(MemberStatus.AWAITING_PAYMENT)
        return True

    def hold_lapsing(
        self,
        payment_id: str,
        lapses_at: datetime,
        actor: str,
        now: datetime,
        *,
        margin: timedelta,
        host_grace: timedelta,
    ) -> bool:
        """A secured share's hold lapses at `lapses_at` and the group has not completed: the
        hold policy (docs/payment.md, "Holds that never lapse").

        An OPEN group with every required share secured is finalized now. Otherwise the group
        keeps as much of its time as is safe: it must become due early only when the hold
        would lapse before the group can complete, i.e. before its due moment (the deadline,
        or the host's grace deadline once the host covers the rest) plus what follows it —
        `margin` for the order to capture, and for HOST_PAYS_REMAINING before the fallback
        applied also the host's grace (the host pays after the deadline). It then becomes due
        at the latest safe moment, `lapses_at - margin [- host_grace]`, never earlier than
        now; the scheduler applies its fallback then, with this reason. The history records
        an OPEN→OPEN row saying why and when. Nothing for other groups (PENDING: the order is
        capturing; closed: everything is released), nor when the hold lapses comfortably
        after the group completes. True when the group changed."""
        attempt = self.attempt_by_payment(payment_id)
        if (
            self.status is not GroupStatus.OPEN
            or attempt is None
            or attempt.status is not AttemptStatus.SUCCEEDED
            or attempt.captured
        ):
            return False
        member = self.member(attempt.member_id)
        why = (
            f"the hold of {member.display_name}'s share lapses at "
            f"{lapses_at.strftime('%Y-%m-%d %H:%M')} UTC"
        )
        if self.fully_paid:
            self.transition(GroupStatus.PENDING, f"{why}: all shares secured", actor, now)
            self.events += [ev.FullyPaid(), ev.Finalized()]
            return True
        current = self.deadline if self.grace_deadline is None else self.grace_deadline
        due = max(now, lapses_at - self._needs_after_due(margin, host_grace))
        if current <= due:
            return False  # the group completes in time (or is due already)
        self.due_reason = why
        if due <= now:
            when = "the fallback applies now instead of at the deadline"
        else:
            when = (
                f"the group is due at {due.strftime('%Y-%m-%d %H:%M:%S')} UTC instead of "
                f"{current.strftime('%Y-%m-%d %H:%M:%S')} UTC"
            )
        # OPEN → OPEN (lifecycle.TRANSITIONS): the group stays open, its history says why
        self.transition(GroupStatus.OPEN, f"{why}: {when}", actor, now)
        if self.grace_deadline is not None:
            self.grace_deadline = due
        else:
            self.deadline = due
        return True

    def freeze(self, now: datetime) -> None:
        """Lock the shares and plan attempt 1 for every member who owes something."""
        if self.frozen_at is not None:
            return
        self._require_editable()
        if self.deadline <= now:
            raise InvalidArgumentError(
                "the deadline has passed", [FieldViolation("deadline", "must be in the future")]
            )
        self.recompute_shares()
        for m in self.members:
            m.required = m.share_minor > 0
            if m.required:
                self._new_attempt(m, m.share_minor)
        self.frozen_at = now
        self.updated_at = now

    def _new_attempt(self, member: Member, amount: int) -> PaymentAttempt:
        previous = self.current_attempt(member)
        if previous is not None and previous.status is AttemptStatus.REQUESTED:
            previous.status = AttemptStatus.SUPERSEDED
        member.attempt += 1
        attempt = PaymentAttempt(member.member_id, member.attempt, amount)
        self.attempts.append(attempt)
        return attempt

    def attach_intent(self, member_id: str, attempt: int, payment_id: str, link: str) -> None:
        """Record the payment service's answer for an attempt."""
        found = self.attempt_of(member_id, attempt)
        if found is not None and not found.payment_id:
            found.payment_id = payment_id
            found.payment_link = link

    def open(self, actor: str, now: datetime) -> bool:
        """DRAFT → OPEN once every planned intent exists; False while some are missing."""
        if self.status is not GroupStatus.DRAFT or self.frozen_at is None:
            return False
        if self.attempts_missing_intent():
            return False
        self.transition(GroupStatus.OPEN, "shares frozen, payment links sent", actor, now)
        for m in self.members:
            if m.required:
                m.move_to(MemberStatus.AWAITING_PAYMENT)
        self.events.append(ev.Opened())
        return True

    def retry_payment(self, member_id: str, now: datetime) -> PaymentAttempt:
        """A fresh attempt for a member whose last payment failed (OPEN only)."""
        if self.status is not GroupStatus.OPEN:
            raise FailedPreconditionError(f"the group is {self.status}", reason="GROUP_NOT_OPEN")
        member = self.member(member_id)
        if member.status is not MemberStatus.PAYMENT_FAILED:
            raise FailedPreconditionError(
                f"the member's payment is {member.status}; only a failed payment can be retried",
                reason="NOTHING_TO_RETRY",
            )
        attempt = self._new_attempt(member, member.share_minor - member.paid_minor)
        member.move_to(MemberStatus.AWAITING_PAYMENT)
        self.updated_at = now
        return attempt

    # ---- payments ----------------------------------------------------------------------

    def payment_succeeded(
        self,
        payment_id: str,
        member_id: str,
        attempt_no: int,
        amount_minor: int,
        captured: bool,
        now: datetime,
    ) -> PaymentOutcome:
        """Count a secured payment, or say it must be released (late, superseded, surplus)."""
        attempt = self.attempt_by_payment(payment_id)
        if attempt is None:
            attempt = self.attempt_of(member_id, attempt_no)
            if attempt is not None and attempt.payment_id and attempt.payment_id != payment_id:
                attempt = None
        if attempt is not None and attempt.status in (
            AttemptStatus.SUCCEEDED,
            AttemptStatus.REJECTED,
        ):
            return PaymentOutcome.DUPLICATE
        member = next((m for m in self.members if m.member_id == member_id), None)
        acceptable = (
            self.status is GroupStatus.OPEN
            and attempt is not None
            and member is not None
            and attempt.member_id == member.member_id
            and attempt.attempt == member.attempt
            and attempt.status is AttemptStatus.REQUESTED
            and member.status is not MemberStatus.COVERED_BY_HOST
            and not member.secured
            and amount_minor == attempt.amount_minor
        )
        if attempt is None:
            attempt = PaymentAttempt(member_id, attempt_no, amount_minor, payment_id=payment_id)
            self.attempts.append(attempt)
        attempt.payment_id = attempt.payment_id or payment_id
        attempt.captured = captured
        if not acceptable or member is None:
            attempt.status = AttemptStatus.REJECTED
            self.updated_at = now
            return PaymentOutcome.REJECTED
        attempt.status = AttemptStatus.SUCCEEDED
        member.paid_minor += amount_minor
        if member.secured:
            member.move_to(MemberStatus.PAID)
            member.paid_at = now
        self.updated_at = now
        self.events.append(
            ev.MemberPaid(member_id, payment_id, amount_minor, len(self.unpaid_required))
        )
        return PaymentOutcome.ACCEPTED

    def payment_failed(
        self, payment_id: str, member_id: str, attempt_no: int, now: datetime
    ) -> bool:
        """Mark a declined attempt; True when it was the member's current one."""
        attempt = self.attempt_by_payment(payment_id) or self.attempt_of(member_id, attempt_no)
        if attempt is None or attempt.status is not AttemptStatus.REQUESTED:
            return False
        attempt.payment_id = attempt.payment_id or payment_id
        attempt.status = AttemptStatus.FAILED
        member = next((m for m in self.members if m.member_id == attempt.member_id), None)
        current = member is not None and member.attempt == attempt.attempt
        if (
            member is not None
            and current
            and self.status is GroupStatus.OPEN
            and not member.secured
        ):
            member.move_to(MemberStatus.PAYMENT_FAILED)
        self.updated_at = now
        return current

    def mark_pending(self, now: datetime) -> bool:
        """OPEN → PENDING when every required share is secured."""
        if self.status is not GroupStatus.OPEN or not self.fully_paid:
            return False
        self.transition(GroupStatus.PENDING, "all shares secured", PAYMENTS_ACTOR, now)
        self.events += [ev.FullyPaid(), ev.Finalized()]
        return True

    # ---- deadline and fallback ---------------------------------------------------------

    def apply_fallback(
        self, actor: str, reason: str, grace: timedelta, now: datetime
    ) -> FallbackOutcome:
        """Deadline passed (or force-finalize): expire, or move what is uncovered to the host.

        HOST_PAYS_REMAINING applies once; when it has already applied (the grace period
        passed), the group expires.
        """
        if self.status is GroupStatus.DRAFT:
            self.expire(reason, actor, now)
            return FallbackOutcome.EXPIRED
        if self.status is not GroupStatus.OPEN:
            raise FailedPreconditionError(f"the group is {self.status}", reason="GROUP_NOT_OPEN")
        if self.fallback_policy is FallbackPolicy.CANCEL or self.fallback_at is not None:
            self.expire(reason, actor, now)
            return FallbackOutcome.EXPIRED
        host = self.host
        uncovered = 0
        for m in self.members:
            if m is host or not m.required or m.secured:
                continue
            uncovered += m.share_minor - m.paid_minor
            m.share_minor = m.paid_minor
            m.required = m.paid_minor > 0
            m.move_to(MemberStatus.COVERED_BY_HOST if m.paid_minor == 0 else MemberStatus.PAID)
            current = self.current_attempt(m)
            if current is not None and current.status is AttemptStatus.REQUESTED:
                current.status = AttemptStatus.SUPERSEDED
        host.share_minor += uncovered
        host.required = True
        current = self.current_attempt(host)
        keep = uncovered == 0 and current is not None and current.status is AttemptStatus.REQUESTED
        if not keep:
            self._new_attempt(host, host.share_minor - host.paid_minor)
        host.move_to(MemberStatus.AWAITING_PAYMENT)
        self.fallback_at = now
        self.grace_deadline = now + grace
        # the group stays OPEN: the history says why it goes on and until when
        covers = (
            f"the host covers the rest ({format_minor(uncovered, self.currency_code)})"
            if uncovered
            else "the host's own share is still owed"
        )
        self.transition(
            GroupStatus.OPEN,
            f"{reason}: {covers} by {self.grace_deadline.strftime('%Y-%m-%d %H:%M:%S')} UTC",
            actor,
            now,
        )
        return FallbackOutcome.HOST_COVERS

    def expire(self, reason: str, actor: str, now: datetime) -> None:
        """OPEN/DRAFT → EXPIRED."""
        self.transition(GroupStatus.EXPIRED, reason, actor, now)
        self.close_reason = reason
        self.events.append(ev.Expired(tuple(self.payment_ids), reason))

    def cancel(self, reason: str, actor: str, now: datetime) -> None:
        """→ CANCELLED (host from DRAFT/OPEN; order failure from PENDING)."""
        self.transition(GroupStatus.CANCELLED, reason, actor, now)
        self.close_reason = reason
        self.events.append(ev.Cancelled(tuple(self.payment_ids), reason, actor))

    def confirm(self, order_id: str, now: datetime) -> None:
        """PENDING → CONFIRMED."""
        self.transition(GroupStatus.CONFIRMED, "order confirmed", ORDERS_ACTOR, now)
        self.order_id = order_id
        self.events.append(ev.Confirmed(order_id))

    def announce_fallback(self, now: datetime) -> bool:
        """`group.host_fallback`, once, when the host's fallback intent exists."""
        if (
            self.status is not GroupStatus.OPEN
            or self.fallback_at is None
            or self.fallback_notified_at is not None
            or self.attempts_missing_intent()
        ):
            return False
        self.fallback_notified_at = now
        self.events.append(ev.HostFallback())
        return True

    def remind_unpaid(self, now: datetime) -> int:
        """`group.reminder_due` for each unpaid member, once per group; how many."""
        if self.reminder_sent_at is not None:
            return 0
        self.reminder_sent_at = now
        unpaid = self.unpaid_required
        self.events.extend(ev.ReminderDue(m.member_id) for m in unpaid)
        return len(unpaid)


def check_member_list(
    people: Sequence[tuple[str, str]], skip: int = 0, field_name: str = "members"
) -> None:
    """Reject duplicates (same e-mail or user id) and lists over MAX_MEMBERS.

    `people` are (email, user_id) pairs in join order; entries before `skip` already exist,
    so violations name the new ones as ``<field_name>[i]``.
    """
    if len(people) > MAX_MEMBERS:
        raise InvalidArgumentError(
            f"a group has at most {MAX_MEMBERS} members",
            [FieldViolation(field_name, f"at most {MAX_MEMBERS} members including the host")],
            reason="TOO_MANY_MEMBERS",
        )
    seen_email: set[str] = set()
    seen_user: set[str] = set()
    bad: list[FieldViolation] = []
    for i, (email, user_id) in enumerate(people):
        label = f"{field_name}[{i - skip}]"
        key = email.strip().lower()
        if key and key in seen_email:
            bad.append(FieldViolation(f"{label}.email", "duplicate member"))
        if user_id and user_id in seen_user:
            bad.append(FieldViolation(f"{label}.user_id", "duplicate member"))
        if key:
            seen_email.add(key)
        if user_id:
            seen_user.add(user_id)
    if bad:
        raise InvalidArgumentError("duplicate members", bad, reason="DUPLICATE_MEMBER")


def _span(duration: timedelta) -> str:
    """``timedelta(days=7)`` → ``7 days``; ``timedelta(minutes=70)`` → ``1 hour 10 minutes``
    (whole seconds; ``0 seconds`` for nothing)."""
    left = int(duration.total_seconds())
    parts: list[str] = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts) or "0 seconds"
