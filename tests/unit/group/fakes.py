"""In-memory stand-ins for the group service's unit of work, repositories and payment client,
so the service layer's handlers run without Postgres or a payment service (cosmicpython's
FakeUnitOfWork pattern). Committed state is kept apart from the open transaction's, so a
handler that fails or does not commit leaves nothing behind."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, cast

from google.protobuf.message import Message

from group_svc.adapters.event_mapping import to_outbox
from group_svc.adapters.repository import Duties, Release
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import Group, HistoryEntry, Member
from group_svc.service_layer.unit_of_work import GroupUnitOfWork
from mppo.common.v1 import cart_pb2
from mppo.order.v1 import order_service_pb2
from mppo.payment.v1 import payment_pb2
from mppo.platform.errors import (
    ConflictError,
    DomainError,
    FieldViolation,
    InvalidArgumentError,
    UnavailableError,
)
from mppo.platform.event_types import decode_event
from mppo.platform.events import Event
from mppo.platform.idempotency import IdempotencyKey
from mppo.platform.unit_of_work import UnitOfWork
from order_svc.sandbox_merchant.catalogue import DEFAULT_CATALOGUE

#: the sandbox merchant's default prices (order_svc/sandbox_merchant/catalogue.py)
CATALOGUE = {str(i["sku"]): int(i["unit_price_minor"]) for i in DEFAULT_CATALOGUE}


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2030, 1, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Store:
    """What the fake database holds (committed)."""

    groups: dict[str, Group] = field(default_factory=dict)
    history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[tuple[str, str], bytes | None] = field(default_factory=dict)


class FakeGroups:
    """Groups over the open transaction's copy of the store."""

    def __init__(self, data: Store, track: Any) -> None:
        self._data = data
        self._track = track

    def _out(self, group: Group) -> Group:
        loaded = copy.deepcopy(group)
        self._track(loaded)
        return loaded

    async def add(self, group: Group) -> None:
        group.version = 1
        self._data.history[group.group_id] = list(group.new_history)
        group.new_history.clear()
        kept = copy.deepcopy(group)
        kept.events.clear()
        self._data.groups[group.group_id] = kept
        self._track(group)

    async def get(self, group_id: str, *, lock: bool = False) -> Group | None:
        found = self._data.groups.get(group_id)
        return self._out(found) if found is not None else None

    async def save(self, group: Group, new_members: set[str] | None = None) -> None:
        stored = self._data.groups[group.group_id]
        if stored.version != group.version:
            raise ConflictError(f"group {group.group_id} changed concurrently; retry")
        group.version += 1
        self._data.history[group.group_id] += group.new_history
        group.new_history.clear()
        group.removed_member_ids.clear()
        kept = copy.deepcopy(group)
        kept.events.clear()
        self._data.groups[group.group_id] = kept

    async def version(self, group_id: str) -> int | None:
        found = self._data.groups.get(group_id)
        return found.version if found else None

    async def members(self, group_id: str) -> list[Member]:
        found = self._data.groups.get(group_id)
        return copy.deepcopy(found.members) if found else []

    async def history(
        self, group_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Any]:
        rows = [
            {
                "id": number,
                "from_status": h.from_status.value if h.from_status else None,
                "to_status": h.to_status.value,
                "reason": h.reason,
                "actor": h.actor,
                "changed_at": h.at,
            }
            for number, h in enumerate(self._data.history.get(group_id, []), start=1)
            if number > after
        ]
        return rows if limit is None else rows[:limit]

    async def ids_for_user(
        self,
        user_id: str,
        status: GroupStatus | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        rows = sorted(
            (
                (g.created_at, g.group_id)
                for g in self._data.groups.values()
                if g.is_visible_to(user_id) and (status is None or g.status is status)
            ),
            reverse=True,
        )
        if after is not None:
            rows = [r for r in rows if r < after]
        return [(group_id, created) for created, group_id in rows[:limit]]

    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        return [
            g.group_id
            for g in self._data.groups.values()
            if g.status in (GroupStatus.DRAFT, GroupStatus.OPEN)
            and (
                (g.fallback_at is None and g.deadline <= now)
                or (g.grace_deadline is not None and g.grace_deadline <= now)
            )
        ][:limit]

    async def fallbacks_without_intent(self, limit: int) -> list[str]:
        return [
            g.group_id
            for g in self._data.groups.values()
            if g.status is GroupStatus.OPEN
            and g.fallback_at is not None
            and g.fallback_notified_at is None
        ][:limit]

    async def claim_reminders_due(self, now: datetime, lead: timedelta, limit: int) -> list[str]:
        return [
            g.group_id
            for g in self._data.groups.values()
            if g.status is GroupStatus.OPEN
            and g.reminder_sent_at is None
            and g.fallback_at is None
            and now < g.deadline <= now + lead
            and g.frozen_at is not None
            and g.frozen_at + (g.deadline - g.frozen_at) / 2 <= now
        ][:limit]

    async def duties(self, now: datetime, lead: timedelta) -> Duties:
        return Duties(
            expiry=bool(await self.claim_due(now, 1) or await self.fallbacks_without_intent(1)),
            reminders=bool(await self.claim_reminders_due(now, lead, 1)),
            releases=bool(await FakeReleases(self._data).claim_due(now, 1)),
        )


class FakeReleases:
    """The release queue over the open transaction's copy of the store."""

    def __init__(self, data: Store) -> None:
        self._data = data

    async def add(
        self, group_id: str, payment_id: str, captured: bool, reason: str, now: datetime
    ) -> None:
        self._data.releases.setdefault(
            payment_id,
            {
                "payment_id": payment_id,
                "group_id": group_id,
                "captured": captured,
                "reason": reason,
                "status": "PENDING",
                "attempts": 0,
                "last_error": None,
                "next_attempt_at": None,
            },
        )

    async def claim_due(self, now: datetime, limit: int) -> Sequence[Release]:
        due = [
            r
            for r in self._data.releases.values()
            if r["status"] == "PENDING"
            and (r["next_attempt_at"] is None or r["next_attempt_at"] <= now)
        ]
        return [
            Release(r["payment_id"], r["group_id"], r["captured"], r["reason"], r["attempts"])
            for r in due[:limit]
        ]

    async def done(self, payment_id: str, now: datetime) -> None:
        self._data.releases[payment_id]["status"] = "DONE"

    async def refused(self, payment_id: str, now: datetime, error: str) -> None:
        self._data.releases[payment_id].update(status="REFUSED", last_error=error)

    async def retry_later(self, payment_id: str, at: datetime, error: str) -> None:
        row = self._data.releases[payment_id]
        row.update(attempts=row["attempts"] + 1, last_error=error, next_attempt_at=at)


class FakeKeys:
    """Idempotency keys over the open transaction's copy of the store."""

    def __init__(self, data: Store) -> None:
        self._data = data

    async def claim(self, key: IdempotencyKey) -> bytes | None:
        name = (key.scope, key.key)
        if name not in self._data.keys:
            self._data.keys[name] = None
            return None
        return self._data.keys[name]

    async def complete(self, key: IdempotencyKey, response: bytes) -> None:
        self._data.keys[(key.scope, key.key)] = response

    async def lookup(self, key: IdempotencyKey) -> bytes | None:
        return self._data.keys.get((key.scope, key.key))

    async def store(self, key: IdempotencyKey, response: bytes) -> bytes | None:
        name = (key.scope, key.key)
        if name in self._data.keys:
            return self._data.keys[name]
        self._data.keys[name] = response
        return None


class FakeUnitOfWork(GroupUnitOfWork):
    """The group unit of work over a `Store`; commits copy the transaction's state back and
    append what the outbox would receive to `published`."""

    def __init__(self, store: Store | None = None) -> None:
        UnitOfWork.__init__(self, cast(Any, None), to_outbox)
        self.store = store or Store()
        self.published: list[Event] = []
        self.commits = 0
        self._tx: Store | None = None

    async def __aenter__(self) -> Self:
        self._reset()
        self._tx = copy.deepcopy(self.store)
        self.groups = FakeGroups(self._tx, self.track)
        self.releases = FakeReleases(self._tx)
        self.idempotency = FakeKeys(self._tx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tx = None
        self._reset()

    async def commit(self) -> None:
        assert self._tx is not None, "commit outside 'async with'"
        self.published += [*self._events, *self._drain()]
        self.store.groups, self.store.history = self._tx.groups, self._tx.history
        self.store.releases, self.store.keys = self._tx.releases, self._tx.keys
        self._tx = copy.deepcopy(self.store)
        self.groups = FakeGroups(self._tx, self.track)
        self.releases = FakeReleases(self._tx)
        self.idempotency = FakeKeys(self._tx)
        self.commits += 1
        callbacks, self._after_commit = self._after_commit, []
        self._events = []
        for callback in callbacks:
            result = callback()
            if result is not None:
                await result

    async def rollback(self) -> None:
        self._tx = copy.deepcopy(self.store)
        self._reset()

    def payloads(self, event_type: str) -> list[Message]:
        """The payloads published so far with this event type."""
        return [decode_event(e) for e in self.published if e.event_type == event_type]

    def event_types(self) -> list[str]:
        """Every published event type, in order."""
        return [e.event_type for e in self.published]


@dataclass
class FakePayments:
    """The payment service as the group service sees it: idempotent intents per attempt."""

    intents: dict[tuple[str, str, int], payment_pb2.Payment] = field(default_factory=dict)
    create_calls: int = 0
    fail_next: int = 0
    released: list[str] = field(default_factory=list)
    release_errors: dict[str, DomainError] = field(default_factory=dict)
    #: payments whose pages were closed (once each), every CloseCheckout call, and failures
    closed: list[str] = field(default_factory=list)
    close_calls: list[str] = field(default_factory=list)
    close_errors: dict[str, DomainError] = field(default_factory=dict)
    paid_first: set[str] = field(default_factory=set)
    #: the provider each intent was asked for ("": the default), by (group, member, attempt)
    providers: dict[tuple[str, str, int], str] = field(default_factory=dict)
    #: called with each payment id before its page is closed (to look at the group then)
    on_close: Callable[[str], None] | None = None

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
    ) -> payment_pb2.Payment:
        self.create_calls += 1
        self.providers[(group_id, member_id, attempt)] = provider
        if self.fail_next > 0:
            self.fail_next -= 1
            raise UnavailableError("provider down (test)")
        key = (group_id, member_id, attempt)
        if key not in self.intents:
            payment_id = str(uuid.uuid4())
            self.intents[key] = payment_pb2.Payment(
                payment_id=payment_id,
                group_id=group_id,
                member_id=member_id,
                attempt=attempt,
                payment_link=f"https://pay.example/{payment_id}",
            )
            self.intents[key].amount.amount_minor = amount_minor
            self.intents[key].amount.currency_code = currency_code
        return self.intents[key]

    async def release(self, payment_id: str, captured: bool, reason: str) -> payment_pb2.Payment:
        error = self.release_errors.get(payment_id)
        if error is not None:
            raise error
        self.released.append(payment_id)
        return payment_pb2.Payment(payment_id=payment_id)

    async def close_checkout(self, payment_id: str, reason: str) -> payment_pb2.Payment:
        """Close a payment's hosted page: it takes no more money (`paid_first`: the payer got
        there first, the payment comes back authorized)."""
        self.close_calls.append(payment_id)
        if self.on_close is not None:
            self.on_close(payment_id)
        error = self.close_errors.get(payment_id)
        if error is not None:
            raise error
        if payment_id in self.paid_first:
            return payment_pb2.Payment(
                payment_id=payment_id, status=payment_pb2.PAYMENT_STATUS_AUTHORIZED
            )
        if payment_id not in self.closed:
            self.closed.append(payment_id)
        return payment_pb2.Payment(payment_id=payment_id, status=payment_pb2.PAYMENT_STATUS_VOIDED)


@dataclass
class FakeOrders:
    """The order service's QuoteCart over a catalogue (sku → unit price), as the sandbox
    merchant prices it."""

    catalogue: dict[str, int] = field(default_factory=lambda: dict(CATALOGUE))
    quotes: int = 0
    fail_next: int = 0

    async def quote_cart(
        self, *, merchant_id: str, currency_code: str, items: Sequence[cart_pb2.LineItem]
    ) -> order_service_pb2.QuoteCartResponse:
        self.quotes += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise UnavailableError("merchant down (test)")
        bad = [
            FieldViolation(f"items[{i}].unit_price_minor", f"costs {self.catalogue.get(i_.sku)}")
            for i, i_ in enumerate(items)
            if self.catalogue.get(i_.sku) != i_.unit_price_minor
        ]
        if bad:
            raise InvalidArgumentError("the cart does not match the catalogue", bad)
        return order_service_pb2.QuoteCartResponse(items=list(items))
