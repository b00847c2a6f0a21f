"""What each order operation costs Postgres, counted (not timed): SQL statements, BEGIN /
COMMIT / ROLLBACK round trips (asyncpg's query logger sees every one the driver sends) and pool
checkouts, over the real repository, unit of work, handlers, consumer path, saga and runner on
a fresh migrated database, with the in-memory merchant, payment service, locks and cache of
the unit tests.

The bounds are the counts after the CPU diet (issue 11 Part B); a change that adds a statement
or a transaction to one of these paths fails here and has to say why. Round trips per
operation are ``statements + begins + commits + rollbacks`` (a statement's first use on a
connection also prepares it: once per connection, not counted).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import order_svc
from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.errors import ConflictError
from mppo.platform.event_types import new_event
from mppo.platform.identity import Caller
from mppo.platform.migrations import upgrade_head
from order_svc.domain.model import FailureReason, Order, ShareStatus
from order_svc.domain.validator import CatalogueItem
from order_svc.entrypoints.consumers import group_consumer
from order_svc.service_layer.commands import GetOrder, GetOrderByGroup
from order_svc.service_layer.handlers import OrderHandlers
from order_svc.service_layer.messages import new_order, spec_from, to_proto
from order_svc.service_layer.runner import SagaRunner
from order_svc.service_layer.saga import OrderSaga, SagaSettings
from order_svc.service_layer.unit_of_work import OrderUnitOfWork
from tests.unit.order.fakes import (
    FakeCache,
    FakeGroups,
    FakeLocks,
    FakeMerchant,
    FakePayments,
    OneMerchant,
)

MIGRATIONS = Path(order_svc.__file__).resolve().parent / "migrations"
SERVICE = Caller(service="group")
PIZZA = CatalogueItem("PIZZA", "Pizza", 1200, "USD", 100)
SODA = CatalogueItem("SODA", "Soda", 250, "USD", 100)
TRUFFLE = CatalogueItem("TRUFFLE", "Truffle", 3200, "USD", 1)
SETTINGS = SagaSettings(lease_seconds=30, max_forward_attempts=3)


@dataclass
class Cost:
    """Counted database work of one operation."""

    statements: int = 0
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0
    checkouts: int = 0
    sql: list[str] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return self.statements + self.begins + self.commits + self.rollbacks

    def counts(self) -> dict[str, int]:
        return {
            "statements": self.statements,
            "begins": self.begins,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "checkouts": self.checkouts,
            "round_trips": self.round_trips,
        }


class Meter:
    """Engine and pool events plus asyncpg's query logger → :class:`Cost` of whatever runs
    inside :meth:`measure`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.cost = Cost()
        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute")
        def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            self.cost.statements += 1
            self.cost.sql.append(" ".join(sql.split())[:100])

        @event.listens_for(sync.pool, "connect")
        def connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.driver_connection.add_query_logger(self._query)

        @event.listens_for(sync.pool, "checkout")
        def checkout(*args: Any) -> None:
            self.cost.checkouts += 1

    def _query(self, record: Any) -> None:
        word = record.query.split(None, 1)[0].rstrip(";").upper() if record.query else ""
        if word == "BEGIN":
            self.cost.begins += 1
        elif word == "COMMIT":
            self.cost.commits += 1
        elif word == "ROLLBACK":
            self.cost.rollbacks += 1

    async def measure(self, op: Callable[[], Awaitable[Any]]) -> tuple[Any, Cost]:
        await asyncio.sleep(0)  # the query logger reports through call_soon
        self.cost = measured = Cost()
        result = await op()
        await asyncio.sleep(0)
        self.cost = Cost()  # what runs between measurements counts nowhere
        return result, measured


class IdleSaga:
    """Stands in for the saga when only the runner's claim is measured."""

    def __init__(self) -> None:
        self.advanced: list[Order | None] = []

    async def advance(self, order_id: str, claimed: Order | None = None) -> None:
        self.advanced.append(claimed)


@dataclass
class Rig:
    engine: AsyncEngine
    meter: Meter
    uow: Callable[[], OrderUnitOfWork]
    handlers: OrderHandlers
    saga: OrderSaga
    merchant: FakeMerchant
    payments: FakePayments
    cache: FakeCache

    def finalized(
        self, lines: list[tuple[CatalogueItem, int]], members: int
    ) -> group_events_pb2.GroupFinalized:
        total = sum(item.unit_price_minor * qty for item, qty in lines)
        amounts = [total // members] * members
        amounts[0] += total - sum(amounts)
        shares = []
        for amount in amounts:
            payment_id = str(uuid.uuid4())
            self.payments.authorize(payment_id, amount)
            shares.append(
                group_events_pb2.FinalizedShare(
                    member_id=str(uuid.uuid4()),
                    payment_id=payment_id,
                    amount=money_pb2.Money(amount_minor=amount, currency_code="USD"),
                )
            )
        return group_events_pb2.GroupFinalized(
            group_id=str(uuid.uuid4()),
            merchant_id="sandbox",
            items=[
                cart_pb2.LineItem(
                    line_id=f"l{n}",
                    sku=item.sku,
                    name=item.name,
                    quantity=qty,
                    unit_price_minor=item.unit_price_minor,
                )
                for n, (item, qty) in enumerate(lines)
            ],
            total=money_pb2.Money(amount_minor=total, currency_code="USD"),
            shares=shares,
            host_user_id="host",
        )

    async def consume(self, message: group_events_pb2.GroupFinalized, event_id: str = "") -> bool:
        """What the group.finalized consumer does with one message (inbox, handler, commit)."""
        consumer = group_consumer(cast(JetStreamContext, None), self.uow, self.handlers)
        evt = new_event(message.group_id, message)
        if event_id:
            evt = type(evt)(
                event_id, evt.event_type, evt.aggregate_id, evt.payload, evt.occurred_at
            )
        return await consumer._apply(evt, message, self.handlers.group_finalized)

    async def order_id(self, group_id: str) -> str:
        async with self.engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT order_id FROM orders WHERE group_id = :g"), {"g": group_id}
            )
        return str(found)

    async def fresh(self, order_id: str) -> order_pb2.Order:
        """The order as the database has it (read past the cache)."""
        async with self.uow() as uow:
            order = await uow.orders.get(order_id)
        assert order is not None
        return to_proto(order)


@pytest_asyncio.fixture(loop_scope="session")
async def rig(fresh_database: str) -> AsyncIterator[Rig]:
    await upgrade_head(MIGRATIONS, fresh_database)
    engine = create_engine(fresh_database, application_name="order-round-trips")
    try:
        sessions = create_sessionmaker(engine)

        def uow() -> OrderUnitOfWork:
            return OrderUnitOfWork(sessions)

        merchant = FakeMerchant(catalogue_items={"PIZZA": PIZZA, "SODA": SODA, "TRUFFLE": TRUFFLE})
        payments = FakePayments()
        cache = FakeCache()
        saga = OrderSaga(uow, OneMerchant(merchant), payments, FakeLocks(), cache, SETTINGS)
        handlers = OrderHandlers(cache, FakeGroups(), lambda: None, OneMerchant(merchant))
        yield Rig(engine, Meter(engine), uow, handlers, saga, merchant, payments, cache)
    finally:
        await engine.dispose()


def assert_at_most(costs: dict[str, Cost], bounds: dict[str, dict[str, int]]) -> None:
    """Every count of every operation within its bound (the counts after the diet)."""
    over = {
        name: {k: v for k, v in cost.counts().items() if v > bounds[name][k]}
        for name, cost in costs.items()
    }
    assert costs.keys() == bounds.keys()
    assert not any(over.values()), (
        json.dumps({name: cost.counts() for name, cost in costs.items()}, indent=1)
        + "\n"
        + json.dumps({name: cost.sql for name, cost in costs.items()}, indent=1)
    )


def bound(statements: int, begins: int, checkouts: int) -> dict[str, int]:
    """One operation's bound; every transaction begun ends in one COMMIT or ROLLBACK."""
    return {
        "statements": statements,
        "begins": begins,
        "commits": begins,
        "rollbacks": begins,
        "checkouts": checkouts,
        "round_trips": statements + 2 * begins,
    }


async def test_what_an_order_of_a_checkout_costs(rig: Rig) -> None:
    """A checkout's order, four members: group.finalized consumed (and redelivered), the
    runner's claim, the saga to CONFIRMED; then an idle runner round and the reads."""
    costs: dict[str, Cost] = {}
    message = rig.finalized([(PIZZA, 2), (SODA, 3)], members=4)
    applied, costs["group.finalized"] = await rig.meter.measure(lambda: rig.consume(message, "e1"))
    assert applied
    applied, costs["group.finalized (redelivered)"] = await rig.meter.measure(
        lambda: rig.consume(message, "e1")
    )
    assert not applied
    order_id = await rig.order_id(message.group_id)

    idle = IdleSaga()
    runner = SagaRunner(rig.uow, cast(OrderSaga, idle), SETTINGS)
    claimed, costs["runner round (one due)"] = await rig.meter.measure(runner.run_once)
    assert claimed == 1
    await runner.closing()
    (claimed_order,) = idle.advanced
    assert claimed_order is not None
    assert to_proto(claimed_order) == await rig.fresh(order_id)  # read with the claim
    claimed, costs["runner round (idle)"] = await rig.meter.measure(runner.run_once)
    assert claimed == 0

    _, costs["saga to CONFIRMED"] = await rig.meter.measure(
        lambda: rig.saga.advance(order_id, claimed_order)
    )
    final = await rig.fresh(order_id)
    assert final.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert [s.step for s in final.steps] == [
        "validate",
        "reserve",
        "place",
        *["capture"] * 4,
        "confirm",
    ]
    assert all(s.status == order_pb2.ORDER_SHARE_STATUS_CAPTURED for s in final.shares)
    # the cached copy (what readers get) is the order as stored
    assert order_pb2.Order.FromString(rig.cache.items[order_id]) == final

    rig.cache.items.clear()
    read, costs["GetOrder (not cached)"] = await rig.meter.measure(
        lambda: rig.handlers.get_order(GetOrder(SERVICE, order_id), rig.uow())
    )
    assert read == final
    rig.cache.items.clear()
    read, costs["GetOrderByGroup (not cached)"] = await rig.meter.measure(
        lambda: rig.handlers.get_order_by_group(
            GetOrderByGroup(SERVICE, message.group_id), rig.uow()
        )
    )
    assert read == final

    # before the diet: 5 statements / 1 transaction; 1 / 1; 1 / 1; 1 / 1; 46 statements,
    # 9 transactions (5 commits, 4 read-only rollbacks), 9 checkouts, 64 round trips; 4 / 1;
    # 5 / 2
    assert_at_most(
        costs,
        {
            "group.finalized": bound(3, begins=1, checkouts=1),
            "group.finalized (redelivered)": bound(1, begins=1, checkouts=1),
            "runner round (one due)": bound(1, begins=0, checkouts=1),
            "runner round (idle)": bound(1, begins=0, checkouts=1),
            # (from the order the claim read) three saves on their own, the confirming save
            # with its outbox row
            "saga to CONFIRMED": bound(5, begins=1, checkouts=4),
            "GetOrder (not cached)": bound(1, begins=0, checkouts=1),
            "GetOrderByGroup (not cached)": bound(2, begins=1, checkouts=2),
        },
    )


async def test_what_a_failed_order_and_a_retry_cost(rig: Rig) -> None:
    """Out of stock: validation fails, both holds are voided, order.failed; and a capture
    that must wait (payment service unavailable once) then completes."""
    costs: dict[str, Cost] = {}
    message = rig.finalized([(TRUFFLE, 2)], members=2)
    assert await rig.consume(message)
    order_id = await rig.order_id(message.group_id)
    _, costs["saga to FAILED (out of stock)"] = await rig.meter.measure(
        lambda: rig.saga.advance(order_id)
    )
    final = await rig.fresh(order_id)
    assert final.status == order_pb2.ORDER_STATUS_FAILED
    assert [s.step for s in final.steps] == ["validate", "void", "void", "fail"]
    assert order_pb2.Order.FromString(rig.cache.items[order_id]) == final

    message = rig.finalized([(PIZZA, 1)], members=2)
    assert await rig.consume(message)
    order_id = await rig.order_id(message.group_id)
    rig.payments.unavailable = 1
    _, costs["saga until a transient capture failure"] = await rig.meter.measure(
        lambda: rig.saga.advance(order_id)
    )
    waiting = await rig.fresh(order_id)
    assert waiting.status == order_pb2.ORDER_STATUS_PLACED
    assert [(s.step, s.outcome) for s in waiting.steps][-1] == ("capture", "retry")
    _, costs["saga resumed to CONFIRMED"] = await rig.meter.measure(
        lambda: rig.saga.advance(order_id)
    )
    final = await rig.fresh(order_id)
    assert final.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert order_pb2.Order.FromString(rig.cache.items[order_id]) == final

    # before the diet: 38 statements, 9 transactions, 9 checkouts; 35, 9, 9; 14, 3, 3
    assert_at_most(
        costs,
        {
            # a read, the failed validation, the first void, the last void with the failure
            "saga to FAILED (out of stock)": bound(5, begins=1, checkouts=4),
            # a read, three saves, the captured share saved, the retry scheduled
            "saga until a transient capture failure": bound(8, begins=1, checkouts=6),
            "saga resumed to CONFIRMED": bound(3, begins=1, checkouts=2),
        },
    )


async def test_a_stale_save_writes_nothing_and_a_statement_on_its_own_stays_alone(
    rig: Rig,
) -> None:
    """The one-statement save keeps the version check: a save of a stale copy raises and
    leaves the order row, its shares and its steps as they were; the same group's order is
    created once; nothing can be written after a statement that committed on its own."""
    message = rig.finalized([(PIZZA, 1)], members=2)
    assert await rig.consume(message)
    order_id = await rig.order_id(message.group_id)
    async with rig.uow() as uow:
        first = await uow.orders.get(order_id)
        second = await uow.orders.get(order_id)
    assert first is not None
    assert second is not None
    assert first == second
    first.mark_validated()
    async with rig.uow() as uow:
        await uow.orders.save(first, lease_seconds=30)
        await uow.commit()
    assert first.version == second.version + 1
    second.fail(FailureReason.OUT_OF_STOCK, "stale", "validate")
    second.shares[0].status = ShareStatus.VOIDED
    async with rig.uow() as uow:
        with pytest.raises(ConflictError):
            await uow.orders.save(second, lease_seconds=30, alone=True)
    stored = await rig.fresh(order_id)
    assert stored.status == order_pb2.ORDER_STATUS_VALIDATED
    assert [s.status for s in stored.shares] == [order_pb2.ORDER_SHARE_STATUS_PENDING] * 2
    assert [(s.step, s.outcome) for s in stored.steps] == [("validate", "ok")]
    assert stored == to_proto(first)  # what the saga keeps in memory is what was stored

    duplicate = new_order(spec_from(message))
    async with rig.uow() as uow:
        assert await uow.orders.add_if_absent(duplicate) == order_id
        await uow.commit()

    async with rig.uow() as uow:
        assert await uow.orders.read(order_id) is not None
        with pytest.raises(RuntimeError):
            await uow.orders.save(first, lease_seconds=30)
