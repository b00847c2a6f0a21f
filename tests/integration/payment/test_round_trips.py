"""What each payment operation costs Postgres, counted (not timed): SQL statements, committed
and rolled-back transactions (BEGIN … COMMIT / ROLLBACK), statements that commit by themselves
(autocommit: no BEGIN / COMMIT) and pool checkouts, over the real repository and unit of work
on a fresh migrated database, with the in-memory provider of the unit tests.

The bounds are the counts after the CPU diet (issue 11 Part B); a change that adds a statement,
a transaction or a connection checkout to one of these paths fails here and has to say why.
Round trips per operation are ``statements + 2 × (commits + rollbacks)`` (the pool has not
pinged on checkout since 8e7dd7d; before, each checkout cost three more: BEGIN, ``;``,
ROLLBACK). Postgres counts ``commits + autocommits`` in ``pg_stat_database.xact_commit``.
"""

from __future__ import annotations

import asyncio
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
    autocommits: int = 0
    checkouts: int = 0
    sql: list[str] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return self.statements + 2 * (self.commits + self.rollbacks)

    def counts(self) -> dict[str, int]:
        return {
            "statements": self.statements,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "autocommits": self.autocommits,
            "checkouts": self.checkouts,
            "round_trips": self.round_trips,
        }


class Meter:
    """Engine and pool events → :class:`Cost` of whatever runs inside :meth:`measure`.

    A transaction counts only if a statement ran in it (the asyncpg dialect sends BEGIN with
    the first statement, so an empty one costs nothing); a statement on an autocommit
    connection is its own transaction, without BEGIN or COMMIT."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.cost = Cost()
        self._open: dict[int, int] = {}
        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute")
        def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            self.cost.statements += 1
            self.cost.sql.append(" ".join(sql.split())[:90])
            if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                self.cost.autocommits += 1
            else:
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


def bound(
    statements: int, commits: int, rollbacks: int, autocommits: int, checkouts: int
) -> dict[str, int]:
    """The most an operation may cost (its round trips follow)."""
    cost = Cost(statements, commits, rollbacks, autocommits, checkouts)
    return cost.counts()


#: (statements, commits, rollbacks, autocommits, checkouts) now; before the CPU diet in the
#: comments (statements/commits/rollbacks/checkouts → round trips without pool pings)
CHECKOUT_PAYMENT: dict[str, dict[str, int]] = {
    # 10/2/0/2 → 14: the attempt, the closed group, insert and first check apart; the attach
    # transaction a statement per provider id, the update and the history row apart. Now the
    # insert (guarded, with its first check) commits by itself, the attach is one guarded
    # statement (no lock first: a create that lost the race reads the winner's) and the outbox
    "create": bound(3, 1, 0, 1, 2),
    # 10/1/1/2 → 14: ids matched one by one in a transaction of their own, then stored, locked,
    # compensate_reason read, next check, update, history and outcome a statement each
    "webhook (applied)": bound(3, 1, 0, 0, 1),
    # 3/0/2/2 → 7: matched before the duplicate was noticed
    "webhook (duplicate)": bound(1, 0, 1, 0, 1),
    # 5/1/1/2 → 9
    "webhook (stale)": bound(2, 1, 0, 0, 1),
    # 7/1/1/2 → 11: the read in a transaction; compensate_reason, next check, update and
    # history a statement each
    "capture": bound(4, 1, 0, 1, 2),
    # 5/1/1/2 → 9
    "webhook (after capture)": bound(2, 1, 0, 0, 1),
    # 1/0/1/1 → 3
    "get": bound(1, 0, 0, 1, 1),
    # 2/2/0/2 → 6: an empty round committed twice
    "reconciler idle round": bound(2, 0, 2, 0, 2),
    # 1/0/1/1 → 3; now 2/0/1/1/2 → 4: the insert is tried first (new attempts are the common
    # case; replays are answered from Redis first)
    "create (replay)": bound(2, 0, 1, 1, 2),
}


CHECKOUT_OPERATIONS = (
    "create",
    "webhook (applied)",
    "webhook (stale)",
    "capture",
    "webhook (after capture)",
)
#: before the CPU diet: 148 statements, 24 commits, 16 rollbacks, 0 autocommits, 228 round
#: trips (348 with the pool's pings, 40 checkouts); Postgres's xact_commit 24 -> 28 (the
#: capture's read and the intent's insert commit by themselves instead of BEGIN ... ROLLBACK /
#: COMMIT)
CHECKOUT_OF_FOUR = {
    "statements": 56,
    "commits": 20,
    "rollbacks": 0,
    "autocommits": 8,
    "round_trips": 96,
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
    # a checkout of four: each member's intent, its two webhooks, its capture and that webhook
    per_checkout = {
        key: 4 * sum(costs[op].counts()[key] for op in CHECKOUT_OPERATIONS)
        for key in ("statements", "commits", "rollbacks", "autocommits", "round_trips")
    }
    assert per_checkout == CHECKOUT_OF_FOUR, per_checkout


#: the paths a checkout does not take, bounded too (and run against Postgres: the unit tests'
#: fake repository does not run this SQL); before the CPU diet in the comments
OTHER_PATHS: dict[str, dict[str, int]] = {
    # 12/1/1/2 → 16; now: stored + matched (rolled back), the provider asked, stored again,
    # locked, applied
    "webhook (new id confirmed)": bound(5, 1, 1, 0, 2),
    # 5/1/1/2 → 9
    "webhook (mismatch)": bound(3, 1, 1, 0, 2),
    # 3/1/0/1 → 5: closed_groups insert and the payments update are one statement now
    "group cancelled": bound(2, 1, 0, 0, 1),
    # 24/4/8/12 → 48: the reason and the payment read apart and read again before the void, a
    # statement per write, the empty expiry round committed. Now: claim 2 (a select and a bump
    # each); per payment a read with its reason (on its own), the re-read applied (lock,
    # unchanged), the void applied (lock, flush, outbox); the expiry query
    "reconciler round (2 compensations)": bound(14, 3, 3, 2, 8),
    # 4/1/0/1 → 6
    "expiry warning": bound(4, 1, 0, 0, 1),
    # 1/1/0/1 → 3: an empty round committed
    "expiry warning (none due)": bound(1, 0, 1, 0, 1),
    # 1/0/1/1 → 3
    "list": bound(1, 0, 1, 0, 1),
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
    (listed, _), costs["list"] = await rig.meter.measure(
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


async def test_racing_creates_attach_one_checkout(rig: Rig) -> None:
    """Creates of one attempt racing each other: one payment, one hosted page, one history row
    and one payment.requested (the attach is guarded, not locked first)."""
    group, member = str(uuid.uuid4()), str(uuid.uuid4())
    made = await asyncio.gather(
        *(rig.handlers.create_payment_intent(intent(member, group), rig.uow()) for _ in range(4))
    )
    assert len({(p.payment_id, p.payment_link, p.provider_payment_id) for p in made}) == 1
    payment_id = made[0].payment_id
    history = await rig.rows(
        "SELECT to_status FROM payment_status_history WHERE payment_id = :p", p=payment_id
    )
    assert [r[0] for r in history] == ["requires_action"]
    events = await rig.rows("SELECT event_type FROM outbox WHERE aggregate_id = :p", p=payment_id)
    assert [r[0] for r in events] == ["payment.requested"]
