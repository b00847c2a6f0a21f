"""What each payment operation costs Postgres, counted (not timed): SQL statements, committed
and rolled-back transactions, and pool checkouts (each one a pre-ping: BEGIN, ``;``,
ROLLBACK), over the real repository and unit of work on a fresh migrated database, with the
in-memory provider of the unit tests.

The bounds are the counts after the CPU diet (issue 11 Part B); a change that adds a statement,
a transaction or a connection checkout to one of these paths fails here and has to say why.
Round trips per operation are ``statements + 2 × transactions + 3 × checkouts``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import payment_svc
from mppo.group.v1 import group_events_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.identity import Caller
from mppo.platform.migrations import upgrade_head
from payment_svc.domain.model import Payment, PaymentStatus
from payment_svc.entrypoints.reconciler import Reconciler
from payment_svc.service_layer import commands
from payment_svc.service_layer.handlers import PaymentHandlers
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork
from payment_svc.settings import PaymentSettings
from tests.unit.payment.fakes import FakeGroups, FakeProvider

S = PaymentStatus
GROUP_SVC = Caller(service="group")
ORDER_SVC = Caller(service="order")
MIGRATIONS = Path(payment_svc.__file__).resolve().parent / "migrations"


@dataclass
class Cost:
    """Counted database work of one operation."""

    statements: int = 0
    commits: int = 0
    rollbacks: int = 0
    checkouts: int = 0
    sql: list[str] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return self.statements + 2 * (self.commits + self.rollbacks) + 3 * self.checkouts

    def counts(self) -> dict[str, int]:
        return {
            "statements": self.statements,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "checkouts": self.checkouts,
            "round_trips": self.round_trips,
        }


class Meter:
    """Engine and pool events → :class:`Cost` of whatever runs inside :meth:`measure`.

    A transaction counts only if a statement ran in it (the asyncpg dialect sends BEGIN with
    the first statement, so an empty one costs nothing)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.cost = Cost()
        self._open: dict[int, int] = {}
        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute")
        def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            self.cost.statements += 1
            self.cost.sql.append(" ".join(sql.split())[:90])
            self._open[id(conn)] = self._open.get(id(conn), 0) + 1

        @event.listens_for(sync, "commit")
        def commit(conn: Any) -> None:
            if self._open.pop(id(conn), 0):
                self.cost.commits += 1

        @event.listens_for(sync, "rollback")
        def rollback(conn: Any) -> None:
            if self._open.pop(id(conn), 0):
                self.cost.rollbacks += 1

        @event.listens_for(sync.pool, "checkout")
        def checkout(*args: Any) -> None:
            self.cost.checkouts += 1

    async def measure(self, op: Callable[[], Awaitable[Any]]) -> tuple[Any, Cost]:
        """``op()`` and what it cost (what runs outside measure is not counted)."""
        self.cost = Cost()
        result = await op()
        cost, self.cost = self.cost, Cost()
        return result, cost


@dataclass
class Rig:
    handlers: PaymentHandlers
    provider: FakeProvider
    meter: Meter
    uow: Callable[[], PaymentUnitOfWork]
    engine: AsyncEngine

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(text(sql), params))

    async def webhook(self, event_id: str, payment: Payment, status: str, amount: int) -> Any:
        body = {
            "id": event_id,
            "type": f"payment.{status}",
            "object": payment.provider_payment_id,
            "also": [payment.provider_checkout_id],
            "status": status,
            "amount": amount,
        }
        return await self.handlers.handle_webhook(
            commands.HandleWebhook(
                "sandbox", json.dumps(body).encode(), {"x-signature": FakeProvider.SIGNATURE}
            ),
            self.uow(),
        )


@pytest_asyncio.fixture(loop_scope="session")
async def rig(fresh_database: str) -> AsyncIterator[Rig]:
    await upgrade_head(MIGRATIONS, fresh_database)
    engine = create_engine(fresh_database, application_name="payment-round-trips")
    try:
        sessions = create_sessionmaker(engine)
        provider = FakeProvider()
        handlers = PaymentHandlers(
            {"sandbox": provider}, PaymentSettings.from_env({"MPPO_ENV": "test"}), FakeGroups()
        )
        yield Rig(handlers, provider, Meter(engine), lambda: PaymentUnitOfWork(sessions), engine)
    finally:
        await engine.dispose()


def assert_costs(costs: dict[str, Cost], bounds: dict[str, dict[str, int]]) -> None:
    """Every operation within its bounds (the SQL it ran is in the message)."""
    measured = {name: cost.counts() for name, cost in costs.items()}
    over = {
        name: (counts, bounds[name])
        for name, counts in measured.items()
        if any(counts[k] > bounds[name][k] for k in counts)
    }
    assert not over, (
        json.dumps(over, indent=1)
        + "\n"
        + json.dumps({name: costs[name].sql for name in over}, indent=1)
    )


#: before the CPU diet → now (statements, commits, rollbacks, checkouts, round trips):
#: create 10/2/0/2/20 → 4/2/0/2/14, applied webhook 10/1/1/2/20 → 3/1/0/1/8, duplicate
#: 3/0/2/2/13 → 1/0/1/1/6, stale webhook 5/1/1/2/15 → 2/1/0/1/7, capture 7/1/1/2/17 →
#: 4/1/1/2/14, idle reconciler round 2/2/0/2/12 → 2/0/2/2/12; a replay without the Redis
#: cache 1/0/1/1/6 → 2/0/1/1/7 (the insert is tried first: new attempts are the common case)
CHECKOUT_PAYMENT: dict[str, dict[str, int]] = {
    "create": {"statements": 4, "commits": 2, "rollbacks": 0, "checkouts": 2, "round_trips": 14},
    "create (replay)": {
        "statements": 2,
        "commits": 0,
        "rollbacks": 1,
        "checkouts": 1,
        "round_trips": 7,
    },
    "webhook (applied)": {
        "statements": 3,
        "commits": 1,
        "rollbacks": 0,
        "checkouts": 1,
        "round_trips": 8,
    },
    "webhook (duplicate)": {
        "statements": 1,
        "commits": 0,
        "rollbacks": 1,
        "checkouts": 1,
        "round_trips": 6,
    },
    "webhook (stale)": {
        "statements": 2,
        "commits": 1,
        "rollbacks": 0,
        "checkouts": 1,
        "round_trips": 7,
    },
    "capture": {"statements": 4, "commits": 1, "rollbacks": 1, "checkouts": 2, "round_trips": 14},
    "webhook (after capture)": {
        "statements": 2,
        "commits": 1,
        "rollbacks": 0,
        "checkouts": 1,
        "round_trips": 7,
    },
    "get": {"statements": 1, "commits": 0, "rollbacks": 1, "checkouts": 1, "round_trips": 6},
    "reconciler idle round": {
        "statements": 2,
        "commits": 0,
        "rollbacks": 2,
        "checkouts": 2,
        "round_trips": 12,
    },
}


def intent(member: str, group: str) -> commands.CreatePaymentIntent:
    return commands.CreatePaymentIntent(
        caller=GROUP_SVC,
        group_id=group,
        member_id=member,
        attempt=1,
        amount_minor=1250,
        currency_code="USD",
        provider="sandbox",
        description="Pizza night share",
    )


async def test_what_one_payment_of_a_checkout_costs(rig: Rig) -> None:
    """One member's payment as a checkout makes it: intent, the two webhooks of a completed
    page (the first applies, the second is stale), a redelivery, the capture and its webhook;
    plus a read and an idle reconciler round."""
    group = str(uuid.uuid4())
    costs: dict[str, Cost] = {}
    payment, costs["create"] = await rig.meter.measure(
        lambda: rig.handlers.create_payment_intent(intent(str(uuid.uuid4()), group), rig.uow())
    )
    _, costs["create (replay)"] = await rig.meter.measure(
        lambda: rig.handlers.create_payment_intent(intent(payment.member_id, group), rig.uow())
    )
    rig.provider.authorize(payment.provider_payment_id, 1250)
    result, costs["webhook (applied)"] = await rig.meter.measure(
        lambda: rig.webhook("evt_completed", payment, "authorized", 1250)
    )
    assert not result.duplicate
    result, costs["webhook (duplicate)"] = await rig.meter.measure(
        lambda: rig.webhook("evt_completed", payment, "authorized", 1250)
    )
    assert result.duplicate
    _, costs["webhook (stale)"] = await rig.meter.measure(
        lambda: rig.webhook("evt_capturable", payment, "authorized", 1250)
    )
    captured, costs["capture"] = await rig.meter.measure(
        lambda: rig.handlers.capture_payment(
            commands.CapturePayment(ORDER_SVC, payment.payment_id, None), rig.uow()
        )
    )
    assert captured.status is S.CAPTURED
    _, costs["webhook (after capture)"] = await rig.meter.measure(
        lambda: rig.webhook("evt_succeeded", payment, "captured", 1250)
    )
    read, costs["get"] = await rig.meter.measure(
        lambda: rig.handlers.get_payment(
            commands.GetPayment(ORDER_SVC, payment.payment_id), rig.uow()
        )
    )
    assert read.status is S.CAPTURED
    reconciler = Reconciler(rig.handlers, rig.uow)
    looked, costs["reconciler idle round"] = await rig.meter.measure(reconciler.run_once)
    assert looked == 0

    assert_costs(costs, CHECKOUT_PAYMENT)


#: the paths a checkout does not take, bounded too (and run against Postgres: the unit tests'
#: fake repository does not run this SQL)
OTHER_PATHS: dict[str, dict[str, int]] = {
    # new id: stored + matched (rolled back), the provider asked, stored again and applied
    # (before: 12/1/1/2/22)
    "webhook (new id confirmed)": {
        "statements": 5,
        "commits": 1,
        "rollbacks": 1,
        "checkouts": 2,
        "round_trips": 15,
    },
    # before: 5/1/1/2/15
    "webhook (mismatch)": {
        "statements": 3,
        "commits": 1,
        "rollbacks": 1,
        "checkouts": 2,
        "round_trips": 13,
    },
    # before: 3/1/0/1/8 (closed_groups insert and the payments update are one statement)
    "group cancelled": {
        "statements": 2,
        "commits": 1,
        "rollbacks": 0,
        "checkouts": 1,
        "round_trips": 7,
    },
    # claim 2 (a select and a bump each), then per payment: a read (with why its money goes
    # back), the re-read applied (lock: unchanged), the void applied (lock, flush, outbox);
    # then the expiry query. Before: 24/4/8/12/84 (the reason and the payment read apart and
    # read again before the void, a statement per write, the empty expiry round committed)
    "reconciler round (2 compensations)": {
        "statements": 14,
        "commits": 3,
        "rollbacks": 5,
        "checkouts": 8,
        "round_trips": 54,
    },
    "expiry warning": {
        "statements": 4,
        "commits": 1,
        "rollbacks": 0,
        "checkouts": 1,
        "round_trips": 9,
    },
    # before: 1/1/0/1/6 (an empty round committed)
    "expiry warning (none due)": {
        "statements": 1,
        "commits": 0,
        "rollbacks": 1,
        "checkouts": 1,
        "round_trips": 6,
    },
    "list": {"statements": 1, "commits": 0, "rollbacks": 1, "checkouts": 1, "round_trips": 6},
}


async def test_the_other_paths_over_postgres(rig: Rig) -> None:
    """New provider ids, a cancelled group's compensation by the reconciler, expiry warnings:
    their outcomes in the tables, and their bounded costs."""
    group = str(uuid.uuid4())
    costs: dict[str, Cost] = {}
    held = await rig.handlers.create_payment_intent(intent(str(uuid.uuid4()), group), rig.uow())
    unpaid = await rig.handlers.create_payment_intent(intent(str(uuid.uuid4()), group), rig.uow())
    checkout = held.provider_checkout_id
    rig.provider.checkouts[checkout].add("ch_extra")
    rig.provider.authorize(held.provider_payment_id, 1250)
    extra = Payment(**{**held.__dict__, "provider_payment_id": "ch_extra"})
    _, costs["webhook (new id confirmed)"] = await rig.meter.measure(
        lambda: rig.webhook("evt_extra", extra, "authorized", 1250)
    )
    stranger = Payment(**{**held.__dict__, "provider_payment_id": "ch_stranger"})
    _, costs["webhook (mismatch)"] = await rig.meter.measure(
        lambda: rig.webhook("evt_stranger", stranger, "authorized", 1250)
    )
    webhooks = await rig.rows(
        "SELECT event_id, outcome, payment_id FROM webhook_events ORDER BY event_id"
    )
    assert [tuple(r) for r in webhooks] == [
        ("evt_extra", "applied", held.payment_id),
        ("evt_stranger", "mismatch", None),
    ]
    mapped = await rig.rows(
        "SELECT provider_payment_id FROM provider_payment_map WHERE payment_id = :p ORDER BY 1",
        p=held.payment_id,
    )
    assert [r[0] for r in mapped] == sorted(
        ["ch_extra", held.provider_payment_id, held.provider_checkout_id]
    )

    cancelled = group_events_pb2.GroupCancelled(
        group_id=group, payment_ids=[held.payment_id, unpaid.payment_id], reason="host left"
    )

    async def cancel() -> None:
        async with rig.uow() as uow:
            await rig.handlers.group_closed(cancelled, uow)
            await uow.commit()

    _, costs["group cancelled"] = await rig.meter.measure(cancel)
    reconciler = Reconciler(rig.handlers, rig.uow)
    looked, costs["reconciler round (2 compensations)"] = await rig.meter.measure(
        reconciler.run_once
    )
    assert looked == 2
    listed, costs["list"] = await rig.meter.measure(
        lambda: rig.handlers.list_payments(commands.ListPayments(ORDER_SVC, group), rig.uow())
    )
    assert [(p.payment_id, p.status) for p in listed] == [
        (held.payment_id, S.VOIDED),
        (unpaid.payment_id, S.VOIDED),
    ]
    history = await rig.rows(
        "SELECT to_status, actor FROM payment_status_history WHERE payment_id = :p ORDER BY id",
        p=held.payment_id,
    )
    assert [tuple(r) for r in history] == [
        ("requires_action", "payment"),
        ("authorized", "provider:sandbox"),
        ("voided", "service:reconciler"),
    ]
    due = await rig.rows(
        "SELECT next_check_at, compensate_reason FROM payments WHERE group_id = :g", g=group
    )
    assert [tuple(r) for r in due] == [(None, "group.cancelled: host left")] * 2

    # a hold that lapses within the warning window is announced once
    other = await rig.handlers.create_payment_intent(
        intent(str(uuid.uuid4()), str(uuid.uuid4())), rig.uow()
    )
    soon = datetime.now(UTC) + timedelta(minutes=5)
    rig.provider.authorize(other.provider_payment_id, 1250)
    state = rig.provider.states[other.provider_payment_id]
    rig.provider.states[other.provider_payment_id] = replace(state, authorization_expires_at=soon)
    await rig.handlers.sync_payment(commands.SyncPayment(ORDER_SVC, other.payment_id), rig.uow())
    warn = commands.WarnExpiringAuthorizations(10)
    warned, costs["expiry warning"] = await rig.meter.measure(
        lambda: rig.handlers.warn_expiring_authorizations(warn, rig.uow())
    )
    assert warned == 1
    warned, costs["expiry warning (none due)"] = await rig.meter.measure(
        lambda: rig.handlers.warn_expiring_authorizations(warn, rig.uow())
    )
    assert warned == 0
    announced = await rig.rows(
        "SELECT event_type FROM outbox WHERE aggregate_id = :p ORDER BY occurred_at",
        p=other.payment_id,
    )
    assert [r[0] for r in announced] == [
        "payment.requested",
        "payment.succeeded",
        "payment.authorization_expiring",
    ]
    assert_costs(costs, OTHER_PATHS)
