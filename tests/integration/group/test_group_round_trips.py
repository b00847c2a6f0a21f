"""What one checkout costs the group database: statements, BEGIN/COMMIT/ROLLBACK per operation.

The group service runs in-process on a fresh database (the servicer, the handlers and the
consumer's unit of work as `EventConsumer._apply` opens it), the payment and order services are
the unit tests' fakes, Redis is real (the snapshot cache). SQLAlchemy engine events count what
reaches Postgres: a statement (``executemany`` included: one pipelined call), the transaction
begun for it, its COMMIT or ROLLBACK. The counts do not depend on timing, so the bounds below
hold on any machine: raising one needs a reason.

The checkout is the benchmark's (bench/load.py, mppo.demo.run_checkout): CreateGroup (host
alone), AddMembers (three guests), three JoinGroup, OpenGroup, four payment.succeeded and
order.confirmed, every call with an idempotency key as the gateway sends it; then GetGroup from
the snapshot cache and one idle scheduler round.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis
from google.protobuf.message import Message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

import group_svc
from group_svc.adapters.cache import GroupCache
from group_svc.adapters.pii import PiiKeyring
from group_svc.entrypoints.expiry_scheduler import ExpiryScheduler
from group_svc.entrypoints.grpc_servicer import GroupServiceServicer
from group_svc.service_layer.handlers import GroupHandlers
from group_svc.service_layer.unit_of_work import GroupUnitOfWork
from mppo.common.v1 import cart_pb2, money_pb2
from mppo.devstack import Infra
from mppo.group.v1 import group_pb2
from mppo.group.v1 import group_service_pb2 as gs
from mppo.order.v1 import order_events_pb2
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.event_types import new_event
from mppo.platform.identity import Caller, reset_verified, set_verified
from mppo.platform.migrations import upgrade_head
from tests.support.catalogue import priced_cart
from tests.unit.group.fakes import FakeOrders, FakePayments

MIGRATIONS = Path(group_svc.__file__).resolve().parent / "migrations"


@dataclass
class Counts:
    """What reached Postgres during one operation."""

    statements: int = 0
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0
    sql: list[str] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return self.statements + self.begins + self.commits + self.rollbacks

    def __str__(self) -> str:
        return (
            f"{self.round_trips} round trips: {self.statements} statements, "
            f"{self.begins} BEGIN, {self.commits} COMMIT, {self.rollbacks} ROLLBACK"
        )


class Counter:
    """Counts statements and transactions on an engine between `start` and `stop`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.current = Counts()
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._statement)
        event.listen(sync, "begin", self._begin)
        event.listen(sync, "commit", self._commit)
        event.listen(sync, "rollback", self._rollback)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.current.statements += 1
        self.current.sql.append(" ".join(statement.split())[:100])

    def _begin(self, conn: Any) -> None:
        self.current.begins += 1

    def _commit(self, conn: Any) -> None:
        self.current.commits += 1

    def _rollback(self, conn: Any) -> None:
        self.current.rollbacks += 1

    async def measure(self, work: Callable[[], Awaitable[Any]]) -> tuple[Any, Counts]:
        self.current = Counts()
        result = await work()
        return result, self.current


class Context:
    """The bits of grpc.aio.ServicerContext the servicer reads."""

    def __init__(self, key: str | None) -> None:
        self._md = (("idempotency-key", key),) if key else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._md


@dataclass
class Service:
    servicer: GroupServiceServicer
    handlers: GroupHandlers
    uow: Callable[[], GroupUnitOfWork]
    payments: FakePayments
    counter: Counter

    async def call(
        self, caller: Caller, method: str, request: Message, key: str | None = "k"
    ) -> tuple[Any, Counts]:
        async def run() -> Any:
            token = set_verified(caller)
            try:
                rpc = getattr(self.servicer, method)
                return await rpc(request, Context(f"{key}-{uuid.uuid4()}" if key else None))
            finally:
                reset_verified(token)

        return await self.counter.measure(run)

    async def consume(
        self, durable: str, message: Message, handler: Callable[[Any, Any], Awaitable[None]]
    ) -> Counts:
        """One event as EventConsumer._apply applies it: inbox row, handler, commit."""
        evt = new_event(str(uuid.uuid4()), message)

        async def run() -> None:
            async with self.uow() as uow:
                assert await uow.record_inbox(durable, evt)
                await handler(message, uow)
                await uow.commit()

        _, counts = await self.counter.measure(run)
        return counts


@pytest_asyncio.fixture(loop_scope="session")
async def service(fresh_database: str, infra: Infra) -> AsyncIterator[Service]:
    await upgrade_head(MIGRATIONS, fresh_database)
    engine = create_engine(fresh_database, application_name="group-round-trips")
    redis = aioredis.Redis.from_url(infra.redis_url)
    keyring = PiiKeyring({"k1": b"\x01" * 32}, "k1")
    cache = GroupCache(redis, keyring, f"t{uuid.uuid4().hex[:6]}:")
    sessions = create_sessionmaker(engine)

    def uow() -> GroupUnitOfWork:
        return GroupUnitOfWork(sessions, keyring)

    payments = FakePayments()
    handlers = GroupHandlers(
        payments=payments,
        orders=FakeOrders(),
        host_grace=timedelta(seconds=60),
        reminder_lead=timedelta(seconds=60),
        cache=cache,
    )
    servicer = GroupServiceServicer(handlers, uow, cache, lambda: datetime.now(UTC))
    try:
        yield Service(servicer, handlers, uow, payments, Counter(engine))
    finally:
        await redis.aclose()
        await engine.dispose()


def _create_request(host: str) -> gs.CreateGroupRequest:
    lines, fees = priced_cart(2000)
    return gs.CreateGroupRequest(
        merchant_id="merchant-1",
        currency_code="USD",
        items=[
            cart_pb2.LineItem(
                line_id=ln.line_id,
                sku=ln.sku,
                name=ln.name,
                quantity=ln.quantity,
                unit_price_minor=ln.unit_price_minor,
            )
            for ln in lines
        ],
        fees_minor=fees,
        split_mode=group_pb2.SPLIT_MODE_EQUAL,
        fallback_policy=group_pb2.FALLBACK_POLICY_CANCEL,
        deadline=_ts(datetime.now(UTC) + timedelta(hours=1)),
        host=group_pb2.MemberInput(display_name="Host", email=f"{host}@example.com"),
    )


def _ts(moment: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    out = Timestamp()
    out.FromDatetime(moment)
    return out


async def checkout(service: Service) -> dict[str, Counts]:
    """The benchmark's checkout of four; the counts of each step (several: summed)."""
    counts: dict[str, Counts] = {}

    def add(name: str, c: Counts) -> None:
        total = counts.setdefault(name, Counts())
        total.statements += c.statements
        total.begins += c.begins
        total.commits += c.commits
        total.rollbacks += c.rollbacks
        total.sql += c.sql

    host = Caller(user_id=f"host-{uuid.uuid4().hex[:6]}")
    created, c = await service.call(host, "CreateGroup", _create_request(host.user_id))
    add("CreateGroup", c)
    group_id = created.group.group_id
    added, c = await service.call(
        host,
        "AddMembers",
        gs.AddMembersRequest(
            group_id=group_id,
            members=[
                group_pb2.MemberInput(display_name=f"Member {i}", email=f"m{i}@example.com")
                for i in range(1, 4)
            ],
        ),
    )
    add("AddMembers", c)
    guests = [m for m in added.group.members if m.role != group_pb2.MEMBER_ROLE_HOST]
    for i, guest in enumerate(guests, start=1):
        _, c = await service.call(
            Caller(user_id=f"member{i}-{group_id[:6]}"),
            "JoinGroup",
            gs.JoinGroupRequest(group_id=group_id, invite_token=guest.invite_token),
        )
        add("JoinGroup x3", c)
    opened, c = await service.call(host, "OpenGroup", gs.OpenGroupRequest(group_id=group_id))
    add("OpenGroup", c)
    assert opened.group.status == group_pb2.GROUP_STATUS_OPEN
    h = service.handlers
    for member in opened.group.members:
        c = await service.consume(
            "group-payments",
            payment_events_pb2.PaymentSucceeded(
                payment_id=member.payment_id,
                group_id=group_id,
                member_id=member.member_id,
                attempt=member.attempt,
                amount=money_pb2.Money(amount_minor=member.share.amount_minor, currency_code="USD"),
            ),
            h.payment_succeeded,
        )
        add("payment.succeeded x4", c)
    c = await service.consume(
        "group-orders",
        order_events_pb2.OrderConfirmed(order_id=f"o-{group_id}", group_id=group_id),
        h.order_confirmed,
    )
    add("order.confirmed", c)
    got, c = await service.call(host, "GetGroup", gs.GetGroupRequest(group_id=group_id), None)
    add("GetGroup (cache miss)", c)
    assert got.group.status == group_pb2.GROUP_STATUS_CONFIRMED
    _, c = await service.call(host, "GetGroup", gs.GetGroupRequest(group_id=group_id), None)
    add("GetGroup (cache hit)", c)
    scheduler = ExpiryScheduler(service.handlers, service.uow)
    _, c = await service.counter.measure(scheduler.work)
    add("scheduler round (idle)", c)
    return counts


#: the most each step may cost: (round trips, statements, COMMITs). Before the one-statement
#: load and save, the answer stored in OpenGroup's last transaction and the scheduler's probe:
#: CreateGroup (12, 8, 1), AddMembers (13, 11, 1), JoinGroup x3 (27, 21, 3), OpenGroup
#: (45, 35, 3), payment.succeeded x4 (41, 33, 4), order.confirmed (9, 7, 1), GetGroup miss
#: (6, 4, 0), hit (3, 1, 0), idle scheduler round (12, 4, 2): 147 round trips, 115 statements
#: and 13 commits for the checkout.
BOUNDS = {
    "CreateGroup": (9, 5, 1),
    "AddMembers": (7, 5, 1),
    "JoinGroup x3": (18, 12, 3),
    "OpenGroup": (13, 7, 2),
    "payment.succeeded x4": (24, 16, 4),
    "order.confirmed": (6, 4, 1),
    "GetGroup (cache miss)": (4, 2, 0),
    "GetGroup (cache hit)": (3, 1, 0),
    "scheduler round (idle)": (3, 1, 0),
}
CHECKOUT_STEPS = (
    "CreateGroup",
    "AddMembers",
    "JoinGroup x3",
    "OpenGroup",
    "payment.succeeded x4",
    "order.confirmed",
)


async def test_checkout_round_trips_stay_within_their_bounds(service: Service) -> None:
    await checkout(service)  # warm: prepared statements, type introspection
    counts = await checkout(service)
    report = "\n".join(f"{name}: {c}\n    " + "\n    ".join(c.sql) for name, c in counts.items())
    for name, (round_trips, statements, commits) in BOUNDS.items():
        c = counts[name]
        assert c.round_trips <= round_trips, report
        assert c.statements <= statements, report
        assert c.commits <= commits, report
    whole = [counts[name] for name in CHECKOUT_STEPS]
    assert sum(c.round_trips for c in whole) <= 77, report
    assert sum(c.commits for c in whole) <= 12, report
