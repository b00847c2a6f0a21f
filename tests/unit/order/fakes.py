"""In-memory stand-ins for the order service's unit of work, repository and outside world, so
the service layer (handlers and saga) is tested without Postgres, Redis, NATS or HTTP."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.clients.group import SERVICE_VIEW, GroupView
from mppo.platform.errors import ConflictError, NotFoundError
from mppo.platform.event_types import decode_event
from mppo.platform.events import Event
from mppo.platform.identity import Caller
from order_svc.domain.model import FailureReason, Line, Order, Step
from order_svc.domain.validator import CatalogueItem
from order_svc.service_layer.ports import (
    MerchantClient,
    MerchantRefusedError,
    MerchantUnavailableError,
    PaymentRefusedError,
    PaymentState,
    PaymentUnavailableError,
    Placement,
)
from order_svc.service_layer.unit_of_work import OrderUnitOfWork


def _stored(order: Order) -> Order:
    kept = copy.deepcopy(order)
    kept.events = []
    kept.new_steps = []  # `steps` holds them already
    return kept


class FakeOrderRepository:
    """The orders table (and its leases) as a dict; implements ports.Orders."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.leased: set[str] = set()
        self.attempt_counts: dict[str, int] = {}
        self.retries: list[tuple[str, float]] = []
        self.track: Any = None  # the current unit of work's track

    def _hand_out(self, order: Order) -> Order:
        if self.track is not None:
            self.track(order)
        return order

    async def add_if_absent(self, order: Order) -> str:
        for existing in self.orders.values():
            if existing.group_id == order.group_id:
                return existing.order_id
        self.orders[order.order_id] = _stored(order)
        order.new_steps = []
        self._hand_out(order)
        return order.order_id

    async def get(self, order_id: str) -> Order | None:
        found = self.orders.get(order_id)
        return None if found is None else self._hand_out(copy.deepcopy(found))

    async def read(self, order_id: str) -> Order | None:
        return await self.get(order_id)

    async def id_for_group(self, group_id: str) -> str | None:
        for order in self.orders.values():
            if order.group_id == group_id:
                return order.order_id
        return None

    async def save(self, order: Order, *, lease_seconds: float, alone: bool = False) -> None:
        current = self.orders[order.order_id]
        if current.version != order.version:
            raise ConflictError(f"order {order.order_id} was changed concurrently")
        order.version += 1
        self.orders[order.order_id] = _stored(order)
        order.new_steps = []
        self.attempt_counts[order.order_id] = 0
        if order.status.terminal:
            self.leased.discard(order.order_id)  # a finished order's save gives the lease back
        else:
            self.leased.add(order.order_id)
        self._hand_out(order)

    async def claim_due(self, limit: int, lease_seconds: float) -> list[Order]:
        due = [
            copy.deepcopy(o)
            for o in self.orders.values()
            if not o.status.terminal and o.order_id not in self.leased
        ][:limit]
        self.leased.update(o.order_id for o in due)
        return due

    async def schedule_retry(self, order_id: str, delay_seconds: float) -> int:
        self.attempt_counts[order_id] = self.attempt_counts.get(order_id, 0) + 1
        self.retries.append((order_id, delay_seconds))
        self.leased.discard(order_id)
        return self.attempt_counts[order_id]

    async def add_step(self, order_id: str, step: str, outcome: str, detail: str) -> None:
        self.orders[order_id].steps.append(Step(step, outcome, detail))

    async def attempts(self, order_id: str) -> int:
        return self.attempt_counts.get(order_id, 0)


class FakeUnitOfWork(OrderUnitOfWork):
    """The platform UnitOfWork's bookkeeping (tracked orders, collected events, after-commit
    callbacks, inbox) over the fake repository; committed events land in `published`."""

    def __init__(self, repo: FakeOrderRepository | None = None) -> None:
        super().__init__(cast("async_sessionmaker[AsyncSession]", None))
        self.repo = repo or FakeOrderRepository()
        self.orders = self.repo
        self.published: list[Event] = []
        self.commits = 0
        self.inbox: set[tuple[str, str]] = set()

    def __call__(self) -> Self:
        """Used as the factory: the same fake every time, so tests can look inside."""
        return self

    async def __aenter__(self) -> Self:
        self._reset()
        self.repo.track = self.track
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.repo.track = None
        self._reset()

    async def record_inbox(self, consumer: str, event: Event) -> bool:
        self.event = event
        if (consumer, event.event_id) in self.inbox:
            return False
        self.inbox.add((consumer, event.event_id))
        return True

    async def commit(self) -> None:
        self.published.extend([*self._events, *self._drain()])
        self.commits += 1
        callbacks, self._after_commit = self._after_commit, []
        self._events = []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        self._reset()

    def published_types(self) -> list[str]:
        return [e.event_type for e in self.published]

    def payloads(self, event_type: str) -> list[Any]:
        return [decode_event(e) for e in self.published if e.event_type == event_type]


@dataclass
class FakeMerchant(MerchantClient):
    """A merchant with a catalogue and stock; `refuse` / `unavailable` script failures."""

    catalogue_items: dict[str, CatalogueItem] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (action, idempotency key)
    orders: dict[str, str] = field(default_factory=dict)  # reference → status
    refuse: dict[str, FailureReason] = field(default_factory=dict)  # action → reason
    unavailable: dict[str, int] = field(default_factory=dict)  # action → failures left

    def _fail(self, action: str) -> None:
        if self.unavailable.get(action, 0) > 0:
            self.unavailable[action] -= 1
            raise MerchantUnavailableError(f"{action}: HTTP 503")
        if action in self.refuse:
            raise MerchantRefusedError(self.refuse[action], f"{action} refused")

    async def catalogue(self) -> Mapping[str, CatalogueItem]:
        self._fail("catalogue")
        return dict(self.catalogue_items)

    async def reserve(
        self, *, reference: str, lines: Sequence[Line], currency: str, idempotency_key: str
    ) -> str:
        self._fail("reserve")
        self.calls.append(("reserve", idempotency_key))
        self.orders.setdefault(reference, "reserved")
        return f"res-{reference}"

    async def place(
        self,
        *,
        reference: str,
        reservation_id: str,
        total_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> Placement:
        self._fail("place")
        self.calls.append(("place", idempotency_key))
        self.orders[reference] = "placed"
        return Placement(merchant_order_id=f"mo-{reference}", status="placed")

    async def cancel(self, *, reference: str, idempotency_key: str) -> str:
        self._fail("cancel")
        self.calls.append(("cancel", idempotency_key))
        before = self.orders.get(reference)
        self.orders[reference] = "cancelled"
        return "cancelled" if before == "placed" else "released" if before else "nothing"

    async def close(self) -> None:
        return None

    def keys(self, action: str) -> list[str]:
        return [key for done, key in self.calls if done == action]


class OneMerchant:
    """MerchantDirectory: every merchant id is `merchant`."""

    def __init__(self, merchant: FakeMerchant) -> None:
        self.merchant = merchant

    def client_for(self, merchant_id: str) -> MerchantClient:
        return self.merchant


@dataclass
class FakePayment:
    amount: int
    status: str = "AUTHORIZED"
    captured: int = 0
    refunded: int = 0
    decline_capture: bool = False


@dataclass
class FakePayments:
    """The payment service's ledger: capture / void / refund, idempotent by key."""

    payments: dict[str, FakePayment] = field(default_factory=dict)
    ops: list[tuple[str, str]] = field(default_factory=list)  # (op, payment id)
    answers: dict[str, PaymentState] = field(default_factory=dict)  # by idempotency key
    unavailable: int = 0  # money-moving calls that fail transiently first

    def authorize(self, payment_id: str, amount: int, *, decline_capture: bool = False) -> None:
        self.payments[payment_id] = FakePayment(amount, decline_capture=decline_capture)

    def _state(self, payment_id: str) -> PaymentState:
        p = self.payments[payment_id]
        return PaymentState(payment_id, p.status, p.captured, p.refunded)

    def _payment(self, payment_id: str) -> FakePayment:
        if payment_id not in self.payments:
            raise PaymentRefusedError(f"{payment_id} not found")
        return self.payments[payment_id]

    def _transient(self) -> None:
        if self.unavailable > 0:
            self.unavailable -= 1
            raise PaymentUnavailableError("UNAVAILABLE: try later")

    async def capture(
        self, payment_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        self._transient()
        if idempotency_key in self.answers:
            return self.answers[idempotency_key]
        p = self._payment(payment_id)
        if p.status != "AUTHORIZED":
            raise PaymentRefusedError(f"payment is {p.status}")
        if p.decline_capture:
            p.status = "FAILED"
            raise PaymentRefusedError("capture declined")
        p.status, p.captured = "CAPTURED", amount_minor
        self.ops.append(("capture", payment_id))
        self.answers[idempotency_key] = self._state(payment_id)
        return self.answers[idempotency_key]

    async def void(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        self._transient()
        if idempotency_key in self.answers:
            return self.answers[idempotency_key]
        p = self._payment(payment_id)
        if p.status != "AUTHORIZED":
            raise PaymentRefusedError(f"payment is {p.status}")
        p.status = "VOIDED"
        self.ops.append(("void", payment_id))
        self.answers[idempotency_key] = self._state(payment_id)
        return self.answers[idempotency_key]

    async def refund(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        self._transient()
        if idempotency_key in self.answers:
            return self.answers[idempotency_key]
        p = self._payment(payment_id)
        if p.status != "CAPTURED":
            raise PaymentRefusedError(f"payment is {p.status}")
        p.status, p.refunded = "REFUNDED", p.captured
        self.ops.append(("refund", payment_id))
        self.answers[idempotency_key] = self._state(payment_id)
        return self.answers[idempotency_key]

    async def get(self, payment_id: str) -> PaymentState:
        self._payment(payment_id)
        return self._state(payment_id)

    def kept(self, payment_id: str) -> int:
        p = self.payments[payment_id]
        return p.captured - p.refunded

    def held(self, payment_id: str) -> int:
        p = self.payments[payment_id]
        return p.amount if p.status == "AUTHORIZED" else 0

    def done(self, op: str) -> list[str]:
        return [pid for kind, pid in self.ops if kind == op]


@dataclass
class FakeGroups:
    """The group service's answer: `members[group]` are the users who may see it."""

    members: dict[str, set[str]] = field(default_factory=dict)
    asked: list[tuple[Caller, str]] = field(default_factory=list)

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        self.asked.append((caller, group_id))
        if caller.service and not caller.user_id:
            return SERVICE_VIEW
        if caller.user_id not in self.members.get(group_id, set()):
            raise NotFoundError("group not found")
        return GroupView(everything=False, is_host=False, own_member_ids=frozenset())


@dataclass
class FakeCache:
    items: dict[str, bytes] = field(default_factory=dict)

    async def get(self, order_id: str) -> bytes | None:
        return self.items.get(order_id)

    async def put(self, order_id: str, order: bytes) -> None:
        self.items[order_id] = order


@dataclass
class FakeLocks:
    held: set[str] = field(default_factory=set)

    async def acquire(self, order_id: str, ttl_seconds: float) -> str | None:
        if order_id in self.held:
            return None
        self.held.add(order_id)
        return order_id

    async def release(self, order_id: str, token: str) -> None:
        self.held.discard(order_id)
