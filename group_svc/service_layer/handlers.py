"""Every handler of the group service: commands, queries and consumed events alike have the
shape ``handler(message, uow)``.

Transactions. A handler that changes state in one transaction runs inside the unit of work
its caller opened, and the caller commits — the same contract as the platform's event
consumer, which records the inbox row in that transaction: the servicer claims the call's
idempotency key in it, the expiry scheduler its SKIP LOCKED rows. Handlers that call the
payment service must not hold a group's row lock across the call, so they are given the unit of
work closed and open their transactions themselves: `open_group`, `retry_payment`,
`force_finalize`, `cancel_group`, `expire_due_groups`, `complete_intents` (and
`release_payments`, which keeps only its queue rows locked while it calls).

Unwanted payment links (`_change_closing_checkouts`). A change that leaves a member's hosted
payment page unwanted — the host takes the rest over (deadline or force-finalize with
HOST_PAYS_REMAINING), the group is cancelled or expires, a retry replaces the link — is
committed only after the payment service closed those checkouts at the provider (CloseCheckout),
so no page takes money for a share the group no longer wants once the change is announced. The
change is planned under the lock, the lock released for the calls, then recomputed under the
lock and committed. A payment service that cannot close them now leaves the group unchanged:
the expiry scheduler tries again next round, a user gets UNAVAILABLE. A payment that completed
before its page closed still arrives as payment.succeeded and is released as before.

Carts are priced before a group exists (`quote_cart`): the order service asks the merchant's
catalogue, and `create_group` refuses a cart it has not priced.

Authorization (docs/design.md §8): only the host changes, opens, cancels or force-finalizes
a group; members see only groups they belong to. Someone who may not see a group gets
NOT_FOUND (its existence is not revealed); a member who may see it but not change it gets
PERMISSION_DENIED.

Events consumed (each applied once, inside the consumer's unit of work):
* payment.succeeded → the member's share is secured (`member.paid`); when every required share
  is, OPEN → PENDING with `group.fully_paid` and `group.finalized`. The group row is locked
  (``FOR UPDATE``) for the whole handler, so payments handled concurrently by two replicas
  serialize and exactly one of them sees the group become fully paid. A payment the group
  must not keep (group no longer OPEN, superseded attempt, share already covered) is queued
  for release.
* payment.failed → the member's current attempt failed; they may RetryPayment.
* order.confirmed → PENDING → CONFIRMED (`group.confirmed`).
* order.failed → PENDING → CANCELLED (`group.cancelled`, listing the payments to release).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from group_svc.adapters.repository import Duties
from group_svc.domain.lifecycle import HOLDS_ACTOR, ORDERS_ACTOR, GroupStatus
from group_svc.domain.model import FallbackOutcome, Group, Member, NewMember, PaymentOutcome
from group_svc.observability import checkout_finished
from group_svc.service_layer import commands as c
from group_svc.service_layer.unit_of_work import GroupUnitOfWork
from mppo.common.v1 import cart_pb2
from mppo.order.v1 import order_events_pb2, order_service_pb2
from mppo.payment.v1 import payment_events_pb2, payment_pb2
from mppo.platform.errors import (
    ConflictError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from mppo.platform.identity import Caller
from mppo.platform.logs import bind_ids
from mppo.platform.money import format_minor
from mppo.platform.order_failure import failure_words
from mppo.platform.providers import PROVIDERS, ProviderChoice
from mppo.platform.rpc_status import is_retryable

logger = logging.getLogger(__name__)

#: services that may retry a member's failed payment for that member: the gateway's group page,
#: which found the member by their invite token (the capability of a member without a login)
RETRY_FOR_MEMBER = frozenset({"gateway"})

#: the close reason of a group the host cancelled without giving one (the members' group page
#: shows the host's own reason, not this)
DEFAULT_CANCEL_REASON = "cancelled by the host"

#: how often a change is re-planned when new unwanted payment links appear while the previous
#: ones were being closed (each round closes what it found)
MAX_CLOSE_ROUNDS = 3


class Payments(Protocol):
    """What the group service asks of the payment service (mppo.clients.payment)."""

    async def create_intent(
        self,
        *,
        group_id: str,
        member_id: str,
        attempt: int,
        amount_minor: int,
        currency_code: str,
        description: str,
        payer_user_id: str,
        provider: str = "",
    ) -> payment_pb2.Payment: ...

    async def release(
        self, payment_id: str, captured: bool, reason: str
    ) -> payment_pb2.Payment: ...

    async def close_checkout(self, payment_id: str, reason: str) -> payment_pb2.Payment: ...


class Orders(Protocol):
    """What the group service asks of the order service (mppo.clients.order)."""

    async def quote_cart(
        self, *, merchant_id: str, currency_code: str, items: Sequence[cart_pb2.LineItem]
    ) -> order_service_pb2.QuoteCartResponse: ...


#: what a caller runs in the last transaction of a multi-step command, before it commits, with
#: the group as committed (the servicer stores the call's answer under its idempotency key)
Finish = Callable[[GroupUnitOfWork, Group], Awaitable[None]]


class SnapshotCache(Protocol):
    """The read cache of group snapshots (adapters/cache.py)."""

    async def invalidate(self, group_id: str, version: int) -> None: ...


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


def _fallback_reason(outcome: FallbackOutcome, why: str) -> str:
    """What a fallback did, as the reason its closed payment links record."""
    if outcome is FallbackOutcome.EXPIRED:
        return f"group expired: {why}"
    return f"the host covers the rest: {why}"


# ---- authorization ----------------------------------------------------------------------


def require_user(caller: Caller) -> str:
    """The end user's id; services may not act as a user."""
    if not caller.user_id:
        raise PermissionDeniedError("this call needs an end user's identity")
    return caller.user_id


def is_service(caller: Caller) -> bool:
    """One of our services, not acting for a user (sees every group)."""
    return bool(caller.service and not caller.user_id)


def check_visible(group: Group | None, caller: Caller, group_id: str) -> Group:
    """The group if the caller may see it; NotFoundError otherwise."""
    if group is None or not (is_service(caller) or group.is_visible_to(caller.user_id)):
        raise NotFoundError(f"group {group_id} not found")
    return group


def check_host(group: Group | None, caller: Caller, group_id: str) -> Group:
    """The group if the caller is its host."""
    visible = check_visible(group, caller, group_id)
    if caller.user_id != visible.host_user_id:
        raise PermissionDeniedError("only the host can do this", reason="HOST_ONLY")
    return visible


async def _load_for_host(uow: GroupUnitOfWork, caller: Caller, group_id: str) -> Group:
    require_user(caller)
    return check_host(await uow.groups.get(group_id, lock=True), caller, group_id)


@dataclass(frozen=True)
class ListedGroups:
    """One page of ListGroups: the groups, and the cursor of the next page (None: last)."""

    groups: list[Group]
    next_after: tuple[datetime, str] | None


class GroupHandlers:
    """The handlers, with the dependencies bootstrap binds: clock, settings, payment and order
    clients and snapshot cache."""

    def __init__(
        self,
        *,
        payments: Payments,
        orders: Orders,
        host_grace: timedelta,
        reminder_lead: timedelta,
        cache: SnapshotCache | None = None,
        clock: Callable[[], datetime] = utcnow,
        providers: ProviderChoice | None = None,
        hold_margin: timedelta = timedelta(hours=1),
        default_deadline: timedelta = timedelta(hours=24),
    ) -> None:
        self._providers = providers or ProviderChoice(configured=PROVIDERS, default="sandbox")
        #: wakes the expiry scheduler (bootstrap sets it) when a group became due early
        self._on_due: Callable[[], None] | None = None
        self._payments = payments
        self._orders = orders
        self._host_grace = host_grace
        self._reminder_lead = reminder_lead
        #: a group due early because a hold lapses is due this long before the lapse
        self._hold_margin = hold_margin
        #: a group created without a deadline must be paid for this long after creation
        self._default_deadline = default_deadline
        self._cache = cache
        self._clock = clock

    @property
    def default_provider(self) -> str:
        """The provider a member who names none pays with (the payment service's default)."""
        return self._providers.default

    def wake_when_due(self, wake: Callable[[], None]) -> None:
        """Call `wake` (the expiry scheduler's) after a commit that made a group due early."""
        self._on_due = wake

    def _invalidate_after_commit(self, uow: GroupUnitOfWork, group: Group) -> None:
        if self._cache is not None:
            uow.after_commit(
                functools.partial(self._cache.invalidate, group.group_id, group.version)
            )

    # ---- unwanted payment links -----------------------------------------------------------

    async def _change_closing_checkouts(
        self,
        uow: GroupUnitOfWork,
        group_id: str,
        load: Callable[[GroupUnitOfWork], Awaitable[Group]],
        change: Callable[[Group], str | None],
    ) -> Group:
        """Apply `change` to the group `load` locks, and commit it once every checkout it
        leaves unwanted (`Group.live_checkouts`) is closed at the payment service.

        `change(group)` changes the group (a domain error refuses it) and names the change —
        the reason the closed checkouts record — or returns None when there is nothing to do.
        The checkouts are closed with no transaction open; the change is then made again
        under the lock and committed when nothing new became unwanted meanwhile.
        UnavailableError (nothing changed) when the payment service cannot close them now."""
        closed: set[str] = set()
        for _ in range(MAX_CLOSE_ROUNDS):
            async with uow:
                group = await load(uow)
                before = group.live_checkouts()
                what = change(group)
                unwanted = before - group.live_checkouts() - closed
                if not unwanted:
                    if what is not None:
                        await uow.groups.save(group)
                        self._invalidate_after_commit(uow, group)
                        await uow.commit()
                    return group
            # the lock is released: close the unwanted pages, then plan the change again
            await self._close_checkouts(group_id, unwanted, what or "payment link not needed")
            closed |= unwanted
        raise UnavailableError(
            "the group kept changing while its payment links were being closed; retry",
            reason="GROUP_BUSY",
        )

    async def _close_checkouts(self, group_id: str, payment_ids: set[str], reason: str) -> None:
        """CloseCheckout for each payment (concurrently). A refusal is final (nothing more to
        close: the payment is gone, or already paid and released as usual); a transient
        failure raises UnavailableError once every call has finished."""

        async def close(payment_id: str) -> DomainError | None:
            with bind_ids(group_id=group_id, payment_id=payment_id):
                try:
                    payment = await self._payments.close_checkout(payment_id, reason)
                except DomainError as exc:
                    if is_retryable(exc):
                        logger.warning("payment link not closed yet: %s", exc)
                        return exc
                    logger.warning("payment service refused to close the payment link: %s", exc)
                    return None
                logger.info(
                    "payment link closed (%s)", payment_pb2.PaymentStatus.Name(payment.status)
                )
                return None

        failures = [f for f in await asyncio.gather(*(close(p) for p in sorted(payment_ids))) if f]
        if failures:
            raise UnavailableError(
                f"the payment service cannot close the group's payment links now: {failures[0]}",
                reason="PAYMENT_SERVICE_UNAVAILABLE",
            )

    async def _close_quietly(self, group_id: str, payment_ids: set[str], reason: str) -> None:
        """Close checkouts nobody will be told about; a failure is only logged (the payment
        service releases a closed group's payments itself, and a late payment is released)."""
        if not payment_ids:
            return
        try:
            await self._close_checkouts(group_id, payment_ids, reason)
        except DomainError as exc:
            logger.warning("stray payment links left to the payment service: %s", exc)

    # ---- commands and queries (inside the caller's unit of work) -------------------------

    def _check_providers(self, named: Sequence[tuple[str, str]]) -> None:
        """Refuse providers the payment service does not offer: (field, provider) pairs."""
        bad = [
            FieldViolation(
                label,
                f"not a configured provider; one of {', '.join(self._providers.configured)}",
            )
            for label, provider in named
            if not self._providers.is_configured(provider)
        ]
        if bad:
            raise InvalidArgumentError("unknown payment provider", bad, reason="PROVIDER_UNKNOWN")

    def _check_new_members(self, members: Sequence[NewMember], label: str) -> None:
        self._check_providers(
            [(f"{label}[{i}].provider", m.provider) for i, m in enumerate(members)]
        )

    def _new_group(self, cmd: c.CreateGroup) -> Group:
        self._check_providers([("host.provider", cmd.host.provider)])
        self._check_new_members(cmd.members, "members")
        now = self._clock()
        group = Group.create(
            group_id=str(uuid.uuid4()),
            host_user_id=require_user(cmd.caller),
            merchant_id=cmd.merchant_id,
            currency_code=cmd.currency_code,
            items=cmd.items,
            fees_minor=cmd.fees_minor,
            tax_minor=cmd.tax_minor,
            tip_minor=cmd.tip_minor,
            split_mode=cmd.split_mode,
            fallback_policy=cmd.fallback_policy,
            deadline=cmd.deadline or now + self._default_deadline,
            host=cmd.host,
            members=cmd.members,
            actor=cmd.caller.label,
            now=now,
        )
        self._check_holds(group, now)
        return group

    def _check_holds(self, group: Group, now: datetime, field_name: str = "deadline") -> None:
        """The group's deadline within its providers' hold windows, the hold policy's margin
        and the host's grace to spare (`Group.check_holds`)."""
        group.check_holds(
            self._providers,
            now,
            field_name,
            margin=self._hold_margin,
            host_grace=self._host_grace,
        )

    async def quote_cart(self, cmd: c.CreateGroup) -> c.CreateGroup:
        """The command with its cart priced by the merchant's catalogue (through the order
        service), after checking everything `create_group` checks (nothing is stored).

        InvalidArgumentError naming each line the catalogue prices differently
        (``items[i].unit_price_minor``, ``items[i].sku``); UnavailableError when the order
        service or the merchant cannot answer now (ask again, with the same idempotency key).
        Runs with no transaction open."""
        self._new_group(cmd)
        try:
            await self._orders.quote_cart(
                merchant_id=cmd.merchant_id,
                currency_code=cmd.currency_code,
                items=[
                    cart_pb2.LineItem(
                        line_id=line.line_id,
                        sku=line.sku,
                        name=line.name,
                        quantity=line.quantity,
                        unit_price_minor=line.unit_price_minor,
                    )
                    for line in cmd.items
                ],
            )
        except InvalidArgumentError:
            raise  # the cart differs from the catalogue: its lines are named
        except DomainError as exc:
            if is_retryable(exc):
                raise UnavailableError(
                    f"the merchant's prices cannot be checked now; retry: {exc}",
                    reason="QUOTE_UNAVAILABLE",
                ) from exc
            logger.error("the order service refused to quote a cart: %r", exc)
            raise InternalError("the cart could not be priced") from exc
        return replace(cmd, quote=c.CartQuote.of(cmd.merchant_id, cmd.currency_code, cmd.items))

    async def create_group(self, cmd: c.CreateGroup, uow: GroupUnitOfWork) -> Group:
        """A new DRAFT group from a quoted cart (`quote_cart`); the caller becomes the host."""
        group = self._new_group(cmd)
        if not cmd.quoted:
            raise FailedPreconditionError(
                "the cart has not been priced by the merchant", reason="CART_NOT_QUOTED"
            )
        await uow.groups.add(group)
        return group

    async def get_group(self, query: c.GetGroup, uow: GroupUnitOfWork) -> Group:
        """A group the caller may see."""
        return check_visible(await uow.groups.get(query.group_id), query.caller, query.group_id)

    async def list_groups(self, query: c.ListGroups, uow: GroupUnitOfWork) -> ListedGroups:
        """One page of the groups the caller hosts or belongs to."""
        user_id = require_user(query.caller)
        rows = await uow.groups.ids_for_user(
            user_id, query.status, query.after, query.page_size + 1
        )
        groups = []
        for group_id, _ in rows[: query.page_size]:
            group = await uow.groups.get(group_id)
            if group is not None:
                groups.append(group)
        more = len(rows) > query.page_size
        last = rows[query.page_size - 1] if more else None
        return ListedGroups(groups, (last[1], last[0]) if last else None)

    async def add_members(self, cmd: c.AddMembers, uow: GroupUnitOfWork) -> Group:
        """The host adds guests to a DRAFT group."""
        group = await _load_for_host(uow, cmd.caller, cmd.group_id)
        self._check_new_members(cmd.members, "members")
        added = group.add_members(cmd.members, self._clock(), "members")
        # a refusal names the first new member whose provider holds too briefly, if any
        shortest, _ = self._providers.shortest_window(m.provider for m in group.members)
        field_name = next(
            (
                f"members[{i}].provider"
                for i, m in enumerate(cmd.members)
                if m.provider and self._providers.resolve(m.provider) == shortest
            ),
            "members",
        )
        self._check_holds(group, self._clock(), field_name)
        await uow.groups.save(group, new_members={m.member_id for m in added})
        self._invalidate_after_commit(uow, group)
        return group

    async def remove_member(self, cmd: c.RemoveMember, uow: GroupUnitOfWork) -> Group:
        """The host removes a guest from a DRAFT group."""
        group = await _load_for_host(uow, cmd.caller, cmd.group_id)
        group.remove_member(cmd.member_id, self._clock())
        await uow.groups.save(group)
        return group

    async def update_split(self, cmd: c.UpdateSplit, uow: GroupUnitOfWork) -> Group:
        """The host changes the split of a DRAFT group."""
        group = await _load_for_host(uow, cmd.caller, cmd.group_id)
        if cmd.expected_version and cmd.expected_version != group.version:
            raise ConflictError(
                f"the group is at version {group.version}, not {cmd.expected_version}",
                reason="VERSION_MISMATCH",
            )
        group.update_split(cmd.mode, cmd.specs, cmd.labels, self._clock())
        await uow.groups.save(group)
        return group

    async def join_group(self, cmd: c.JoinGroup, uow: GroupUnitOfWork) -> tuple[Group, Member]:
        """A user accepts an invitation."""
        user_id = require_user(cmd.caller)
        group = await uow.groups.get(cmd.group_id, lock=True)
        if group is None:
            raise NotFoundError(f"group {cmd.group_id} not found")
        member = group.join(cmd.invite_token, user_id, self._clock())
        await uow.groups.save(group)
        return group, member

    async def join_with_provider(
        self, cmd: c.JoinGroup, uow: GroupUnitOfWork, finish: Finish | None = None
    ) -> Group:
        """A user accepts an invitation and names the provider they pay with. When their
        payment was planned at another provider (the group is open, or being opened), the
        unpaid link is closed first and a new attempt at this provider is requested, as for a
        retry (`finish` runs in the transaction that stores it). `uow` is given closed."""
        user_id = require_user(cmd.caller)
        self._check_providers([("provider", cmd.provider)])

        async def load(tx: GroupUnitOfWork) -> Group:
            group = await tx.groups.get(cmd.group_id, lock=True)
            if group is None:
                raise NotFoundError(f"group {cmd.group_id} not found")
            return group

        def change(group: Group) -> str:
            now = self._clock()
            member = group.join(cmd.invite_token, user_id, now)
            resolve = self._providers.resolve
            changes = resolve(member.provider) != resolve(cmd.provider)
            group.choose_provider(member, cmd.provider, changes)
            if changes:
                self._check_holds(group, now, "provider")
            return f"the member pays with {resolve(cmd.provider)} instead"

        group = await self._change_closing_checkouts(uow, cmd.group_id, load, change)
        return await self._complete_intents(cmd.group_id, cmd.caller.label, uow, group, finish)

    async def group_history(
        self, query: c.GetGroupHistory, uow: GroupUnitOfWork
    ) -> tuple[list[Any], int]:
        """One page of the status changes of a group the caller may see, oldest first, and
        the number of the page's last change when more follow (0 on the last page)."""
        await self.get_group(c.GetGroup(query.caller, query.group_id), uow)
        rows = await uow.groups.history(
            query.group_id, after=query.after, limit=query.page_size + 1
        )
        more = int(rows[query.page_size - 1]["id"]) if len(rows) > query.page_size else 0
        return rows[: query.page_size], more

    async def group_contacts(self, query: c.GetGroupContacts, uow: GroupUnitOfWork) -> list[Member]:
        """The members, contact details included (our services only)."""
        if not is_service(query.caller):
            raise PermissionDeniedError("contacts are for our services only")
        members = await uow.groups.members(query.group_id)
        if not members:
            raise NotFoundError(f"group {query.group_id} not found")
        return members

    # ---- commands that call the payment service (own transactions) -----------------------

    async def open_group(
        self, cmd: c.OpenGroup, uow: GroupUnitOfWork, finish: Finish | None = None
    ) -> Group:
        """Freeze (transaction 1, when not frozen yet) → request the intents → open and
        publish group.opened (transaction 2, which also runs `finish`). Asking again after any
        failure resumes where it stopped."""
        async with uow:
            group = await _load_for_host(uow, cmd.caller, cmd.group_id)
            if group.status is GroupStatus.DRAFT and group.frozen_at is None:
                group.freeze(self._clock())
                await uow.groups.save(group)
                await uow.commit()
            elif group.status not in (GroupStatus.DRAFT, GroupStatus.OPEN):
                raise FailedPreconditionError(
                    f"the group is {group.status}", reason="GROUP_NOT_DRAFT"
                )
        # the group as transaction 1 left it: the intents it misses are requested
        return await self._complete_intents(cmd.group_id, cmd.caller.label, uow, group, finish)

    async def retry_payment(
        self, cmd: c.RetryPayment, uow: GroupUnitOfWork, finish: Finish | None = None
    ) -> Group:
        """Plan a fresh attempt for a member whose payment failed (the old link is closed
        first), and request its intent (`finish` runs in the transaction that stores it).
        The member or the host asks; or the gateway's group page (`RETRY_FOR_MEMBER`), for
        the member whose invite token it checked (a member who never logged in)."""
        for_member = is_service(cmd.caller) and cmd.caller.service in RETRY_FOR_MEMBER
        if not for_member:
            require_user(cmd.caller)

        async def load(tx: GroupUnitOfWork) -> Group:
            group = await tx.groups.get(cmd.group_id, lock=True)
            return check_visible(group, cmd.caller, cmd.group_id)

        def change(group: Group) -> str:
            member = group.member(cmd.member_id)
            if not for_member and cmd.caller.user_id not in (group.host_user_id, member.user_id):
                raise PermissionDeniedError("only the member or the host can retry this payment")
            group.retry_payment(cmd.member_id, self._clock())
            return "payment link replaced by a new attempt"

        group = await self._change_closing_checkouts(uow, cmd.group_id, load, change)
        return await self._complete_intents(cmd.group_id, cmd.caller.label, uow, group, finish)

    async def cancel_group(self, cmd: c.CancelGroup, uow: GroupUnitOfWork) -> Group:
        """The host cancels a DRAFT or OPEN group. Its payment links are closed first; the
        payment service then releases the holds (group.cancelled)."""

        async def load(tx: GroupUnitOfWork) -> Group:
            return await _load_for_host(tx, cmd.caller, cmd.group_id)

        def change(group: Group) -> str:
            if group.status is GroupStatus.PENDING:
                raise FailedPreconditionError(
                    "the order is being placed; it can no longer be cancelled",
                    reason="GROUP_PENDING",
                )
            reason = cmd.reason.strip() or DEFAULT_CANCEL_REASON
            group.cancel(reason, cmd.caller.label, self._clock())
            return f"group cancelled: {reason}"

        return await self._change_closing_checkouts(uow, cmd.group_id, load, change)

    async def force_finalize(self, cmd: c.ForceFinalize, uow: GroupUnitOfWork) -> Group:
        """The host applies the fallback now (again: nothing changes). The links of the shares
        the host takes over (or of every share, when the group expires) are closed first."""

        async def load(tx: GroupUnitOfWork) -> Group:
            return await _load_for_host(tx, cmd.caller, cmd.group_id)

        def change(group: Group) -> str | None:
            if group.status is not GroupStatus.OPEN:
                raise FailedPreconditionError(
                    f"only an OPEN group can be force-finalized; this one is {group.status}",
                    reason="GROUP_NOT_OPEN",
                )
            if group.fallback_at is not None:  # the host covers the rest already
                return None
            outcome = group.apply_fallback(
                cmd.caller.label, "force-finalized by the host", self._host_grace, self._clock()
            )
            return _fallback_reason(outcome, "force-finalized by the host")

        group = await self._change_closing_checkouts(uow, cmd.group_id, load, change)
        if group.status is GroupStatus.OPEN:
            return await self.complete_intents(
                c.CompleteIntents(cmd.group_id, cmd.caller.label), uow
            )
        return group

    async def complete_intents(self, cmd: c.CompleteIntents, uow: GroupUnitOfWork) -> Group:
        """Request the missing intents (outside any transaction, idempotent per attempt),
        store them under the group's row lock, publish what became possible: `group.opened`
        once every intent of a frozen DRAFT group exists, `group.host_fallback` once the
        host's fallback intent does. Whoever asks again resumes where it stopped."""
        return await self._complete_intents(cmd.group_id, cmd.actor, uow)

    async def _complete_intents(
        self,
        group_id: str,
        actor: str,
        uow: GroupUnitOfWork,
        group: Group | None = None,
        finish: Finish | None = None,
    ) -> Group:
        """`complete_intents`, starting from `group` when the caller just read it (no read of
        its own), and running `finish` in the transaction that stores the intents (committed
        then even when nothing changed)."""
        if group is None:
            async with uow:
                group = await uow.groups.get(group_id)
            if group is None:
                raise NotFoundError(f"group {group_id} not found")
        answers: dict[tuple[str, int], payment_pb2.Payment] = {}
        for attempt in group.attempts_missing_intent():
            member = group.member(attempt.member_id)
            answers[(attempt.member_id, attempt.attempt)] = await self._payments.create_intent(
                group_id=group.group_id,
                member_id=attempt.member_id,
                attempt=attempt.attempt,
                amount_minor=attempt.amount_minor,
                currency_code=group.currency_code,
                description=(
                    f"Your share of group order {group.group_id[:8]} at {group.merchant_id}: "
                    f"{format_minor(attempt.amount_minor, group.currency_code)}"
                ),
                payer_user_id=member.user_id,
                provider=member.provider,
            )
        async with uow:
            locked = await uow.groups.get(group_id, lock=True)
            if locked is None:
                raise NotFoundError(f"group {group_id} not found")
            changed = bool(answers)
            for (member_id, attempt_no), payment in answers.items():
                locked.attach_intent(
                    member_id, attempt_no, payment.payment_id, payment.payment_link
                )
            now = self._clock()
            changed = locked.open(actor, now) or changed
            changed = locked.announce_fallback(now) or changed
            if changed:
                await uow.groups.save(locked)
                self._invalidate_after_commit(uow, locked)
            if finish is not None:
                await finish(uow, locked)
            if changed or finish is not None:
                await uow.commit()
        # intents of attempts the group moved past meanwhile (closed, superseded) are not sent
        # to anyone: close their pages as well
        stray = {p.payment_id for p in answers.values()} - locked.live_checkouts()
        await self._close_quietly(group_id, stray, "payment link no longer needed")
        return locked

    # ---- the expiry scheduler's duties ----------------------------------------------------

    async def scheduler_duties(self, uow: GroupUnitOfWork) -> Duties:
        """Which of the scheduler's duties have work now: one read, so that an idle round
        opens no other transaction and commits nothing."""
        async with uow:
            return await uow.groups.duties(self._clock(), self._reminder_lead)

    async def expire_due_groups(self, cmd: c.ExpireDueGroups, uow: GroupUnitOfWork) -> list[str]:
        """Apply the fallback to due groups (found with SKIP LOCKED, re-checked under the lock),
        each once the payment links it leaves unwanted are closed (a group whose links cannot
        be closed now stays due: the next round tries again); the ids of groups whose host
        fallback still needs its intent. `uow` is given closed."""
        now = self._clock()
        async with uow:
            due = await uow.groups.claim_due(now, cmd.limit)
        for group_id in due:
            with bind_ids(group_id=group_id):
                outcomes: list[FallbackOutcome] = []

                async def load(tx: GroupUnitOfWork, group_id: str = group_id) -> Group:
                    group = await tx.groups.get(group_id, lock=True)
                    if group is None:
                        raise NotFoundError(f"group {group_id} not found")
                    return group

                def change(group: Group, outcomes: list[FallbackOutcome] = outcomes) -> str | None:
                    if not group.is_due(now):  # another scheduler was first
                        return None
                    reason = group.due_reason or (
                        "grace period passed" if group.fallback_at else "deadline passed"
                    )
                    outcome = group.apply_fallback(cmd.actor, reason, self._host_grace, now)
                    group.due_reason = ""
                    outcomes.append(outcome)
                    return _fallback_reason(outcome, reason)

                try:
                    group = await self._change_closing_checkouts(uow, group_id, load, change)
                except DomainError as exc:
                    logger.warning("deadline passed, the fallback waits: %s", exc)
                    continue
                if not outcomes:
                    continue
                if outcomes[-1] is FallbackOutcome.EXPIRED:
                    logger.info("group expired (%s)", group.close_reason)
                else:
                    logger.info("deadline passed: the host covers the rest")
        async with uow:
            return await uow.groups.fallbacks_without_intent(cmd.limit)

    async def send_reminders(self, cmd: c.SendReminders, uow: GroupUnitOfWork) -> int:
        """`group.reminder_due` once per unpaid member of groups close to their deadline."""
        now = self._clock()
        sent = 0
        for group_id in await uow.groups.claim_reminders_due(now, self._reminder_lead, cmd.limit):
            group = await uow.groups.get(group_id, lock=True)
            if group is None or group.reminder_sent_at is not None:
                continue
            sent += group.remind_unpaid(now)
            await uow.groups.save(group)
        return sent

    async def release_payments(self, cmd: c.ReleasePayments, uow: GroupUnitOfWork) -> int:
        """Void (or refund) the payments the groups do not keep; how many were released.

        A refusal by the payment service (FAILED_PRECONDITION: already voided or refunded;
        NOT_FOUND; any other answer that is not retryable) is final and recorded; a transient
        failure (rpc_status.is_retryable) is retried later with a growing pause."""
        released = 0
        async with uow:
            now = self._clock()
            for item in await uow.releases.claim_due(now, cmd.limit):
                with bind_ids(group_id=item.group_id, payment_id=item.payment_id):
                    try:
                        await self._payments.release(item.payment_id, item.captured, item.reason)
                    except DomainError as exc:
                        if is_retryable(exc):
                            pause = min(
                                cmd.max_backoff_seconds,
                                cmd.backoff_seconds * 2 ** min(item.attempts, 16),
                            )
                            logger.warning("release failed, retry in %.0fs: %s", pause, exc)
                            await uow.releases.retry_later(
                                item.payment_id, now + timedelta(seconds=pause), str(exc)
                            )
                        else:
                            logger.warning("payment service refused the release: %s", exc)
                            await uow.releases.refused(
                                item.payment_id, now, f"{type(exc).__name__}: {exc}"
                            )
                        continue
                    await uow.releases.done(item.payment_id, now)
                    released += 1
                    logger.info("released a payment the group does not keep")
            await uow.commit()
        return released

    # ---- consumed events (inside the consumer's unit of work) ----------------------------

    async def payment_succeeded(
        self, msg: payment_events_pb2.PaymentSucceeded, uow: GroupUnitOfWork
    ) -> None:
        """Count a secured payment; finalize the group when it was the last one needed."""
        with bind_ids(group_id=msg.group_id, member_id=msg.member_id, payment_id=msg.payment_id):
            group = await uow.groups.get(msg.group_id, lock=True)
            if group is None:
                logger.warning("payment.succeeded for an unknown group; ignored")
                return
            now = self._clock()
            outcome = group.payment_succeeded(
                msg.payment_id,
                msg.member_id,
                msg.attempt,
                msg.amount.amount_minor,
                msg.captured,
                now,
            )
            if outcome is PaymentOutcome.DUPLICATE:
                return
            if outcome is PaymentOutcome.REJECTED:
                logger.warning(
                    "payment not kept (group %s): queued for release", group.status.value
                )
                await uow.groups.save(group)
                await uow.releases.add(
                    group.group_id,
                    msg.payment_id,
                    msg.captured,
                    f"group {group.status.value.lower()}: payment not needed",
                    now,
                )
                return
            if group.mark_pending(now):
                logger.info("group fully paid; finalized")
            await uow.groups.save(group)

    async def authorization_expiring(
        self, msg: payment_events_pb2.AuthorizationExpiring, uow: GroupUnitOfWork
    ) -> None:
        """A secured share's hold lapses soon (payment.authorization_expiring): the hold policy
        (`Group.hold_lapsing`): finalize now when everything is secured; otherwise, when the
        hold would lapse before the group can complete, the group becomes due at the latest
        safe moment (the hold margin, and for HOST_PAYS_REMAINING the host's grace, before the
        lapse; now at the earliest) and the scheduler applies its fallback then (woken here)."""
        with bind_ids(group_id=msg.group_id, payment_id=msg.payment_id):
            group = await uow.groups.get(msg.group_id, lock=True)
            if group is None:
                logger.warning("payment.authorization_expiring for an unknown group; ignored")
                return
            now = self._clock()
            lapses_at = (
                msg.authorization_expire_time.ToDatetime(tzinfo=UTC)
                if msg.HasField("authorization_expire_time")
                else now
            )
            changed = group.hold_lapsing(
                msg.payment_id,
                lapses_at,
                HOLDS_ACTOR,
                now,
                margin=self._hold_margin,
                host_grace=self._host_grace,
            )
            if not changed:
                logger.info("a hold lapses soon; the group (%s) needs nothing", group.status)
                return
            logger.warning("a hold lapses soon: %s", group.due_reason or "finalized early")
            await uow.groups.save(group)
            self._invalidate_after_commit(uow, group)
            if self._on_due is not None:
                uow.after_commit(self._on_due)

    async def payment_failed(
        self, msg: payment_events_pb2.PaymentFailed, uow: GroupUnitOfWork
    ) -> None:
        """Mark the attempt failed."""
        with bind_ids(group_id=msg.group_id, member_id=msg.member_id, payment_id=msg.payment_id):
            group = await uow.groups.get(msg.group_id, lock=True)
            if group is None:
                logger.warning("payment.failed for an unknown group; ignored")
                return
            if group.payment_failed(msg.payment_id, msg.member_id, msg.attempt, self._clock()):
                logger.info("member's payment failed: %s", msg.reason)
            await uow.groups.save(group)

    async def order_confirmed(
        self, msg: order_events_pb2.OrderConfirmed, uow: GroupUnitOfWork
    ) -> None:
        """PENDING → CONFIRMED."""
        with bind_ids(group_id=msg.group_id, order_id=msg.order_id):
            group = await uow.groups.get(msg.group_id, lock=True)
            if group is None or group.status is not GroupStatus.PENDING:
                state = group.status.value if group else "unknown"
                logger.error("order.confirmed for a group in %s; nothing changed", state)
                return
            now = self._clock()
            group.confirm(msg.order_id, now)
            await uow.groups.save(group)
            _observe_checkout(uow, "confirmed", group.created_at, now)

    async def order_failed(self, msg: order_events_pb2.OrderFailed, uow: GroupUnitOfWork) -> None:
        """PENDING → CANCELLED; the payment service releases the holds of a cancelled group."""
        with bind_ids(group_id=msg.group_id, order_id=msg.order_id):
            group = await uow.groups.get(msg.group_id, lock=True)
            if group is None or group.status is not GroupStatus.PENDING:
                state = group.status.value if group else "unknown"
                logger.error("order.failed for a group in %s; nothing changed", state)
                return
            group.order_id = msg.order_id
            now = self._clock()
            # every member reads the group's reason: the cause in words, never the order's
            # detail (it names a member's payment and their provider's message)
            logger.info("order failed: %s", msg.detail or "no detail")
            group.cancel(f"order failed: {failure_words(msg.reason)}", ORDERS_ACTOR, now)
            await uow.groups.save(group)
            _observe_checkout(uow, "failed", group.created_at, now)


def _observe_checkout(
    uow: GroupUnitOfWork, outcome: str, created_at: datetime, now: datetime
) -> None:
    """Once the outcome is committed (once per group, whatever the redeliveries): the checkout's
    end-to-end time, up to the order service's record of the outcome (the event's
    occurred_at) when the event is at hand."""
    event = getattr(uow, "event", None)
    finished = event.occurred_at if event is not None else now
    uow.after_commit(lambda: checkout_finished(outcome, created_at, finished))
