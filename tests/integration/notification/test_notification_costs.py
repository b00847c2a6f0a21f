"""What one checkout of four costs the notification service, counted (not timed).

Postgres is reached through a counting proxy (:mod:`.wire_counter`: transactions, statements,
round trips read off the wire protocol) and e-mail goes to the in-process SMTP sink (counted
connections and commands). The scenario is a checkout of four members as the service sees
it: group.opened, then per member payment.succeeded and member.paid, group.confirmed, then
payment.captured per member; each event is applied as the inbox consumer applies it (one
unit of work: inbox row, handler, commit) and, after each group event, the sender runs its
rounds the way its loop does (woken by the commit, again while a round reports more).

The asserted bounds are the counts after issue 11's CPU diet; the numbers before it are in
the comments. A second checkout is measured so statement caches are warm, as in a service
that has been running.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf.message import Message
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import notification_svc
from mppo.common.v1 import money_pb2
from mppo.group.v1 import group_events_pb2 as ge
from mppo.payment.v1 import payment_events_pb2 as pe
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.event_types import new_event
from mppo.platform.migrations import upgrade_head
from notification_svc.adapters.mailer import POOL_SIZE, SmtpMailer
from notification_svc.bootstrap import sender_sessions
from notification_svc.service_layer.handlers import PAYMENT_HANDLERS, GroupEventHandlers
from notification_svc.service_layer.sender import Sender, SenderPolicy
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork
from notification_svc.smtp_sink import smtp_server
from notification_svc.smtp_sink.smtp_server import start_smtp_server
from notification_svc.smtp_sink.store import MessageStore
from tests.integration.notification.wire_counter import WireCounter, WireCounts
from tests.unit.notification.fakes import FakeContacts, contact

MIGRATIONS = Path(notification_svc.__file__).parent / "migrations"
MEMBERS = ("host", "ann", "bob", "cy")
DURABLE = {"group": "notification-group", "payment": "notification-payments"}


@dataclass
class SmtpCounts:
    """What the sink saw: connections and commands by verb."""

    connections: int = 0
    commands: Counter[str] = field(default_factory=Counter)


@dataclass
class Costs:
    """Wire counts per operation of the scenario, and the sink's counts."""

    ops: dict[str, list[WireCounts]] = field(default_factory=dict)
    smtp: SmtpCounts = field(default_factory=SmtpCounts)
    mails: int = 0

    def add(self, op: str, counts: WireCounts) -> None:
        self.ops.setdefault(op, []).append(counts)

    def total(self, *ops: str) -> WireCounts:
        found = WireCounts()
        for op in ops or tuple(self.ops):
            for c in self.ops.get(op, []):
                found = WireCounts(
                    queries=found.queries + c.queries,
                    executes=found.executes + c.executes,
                    syncs=found.syncs + c.syncs,
                    implicit=found.implicit + c.implicit,
                )
        return found

    def report(self) -> dict[str, Any]:
        return {
            "per_op": {
                op: {"count": len(items), **self.total(op).summary()}
                for op, items in self.ops.items()
            },
            "checkout": self.total().summary(),
            "smtp": {"connections": self.smtp.connections, **self.smtp.commands},
            "mails": self.mails,
        }


def _count_sink(monkeypatch: pytest.MonkeyPatch, counts: SmtpCounts) -> None:
    session = smtp_server._Session
    run, command = session.run, session._command

    async def counted_run(self: Any) -> None:
        counts.connections += 1
        await run(self)

    async def counted_command(self: Any, verb: str, arg: str) -> bool:
        counts.commands[verb] += 1
        return bool(await command(self, verb, arg))

    monkeypatch.setattr(session, "run", counted_run)
    monkeypatch.setattr(session, "_command", counted_command)


def _usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def checkout_events(group_id: str) -> list[tuple[str, Message]]:
    """The events a checkout of four sends the notification service, in order."""
    events: list[tuple[str, Message]] = [
        (
            "group",
            ge.GroupOpened(
                group_id=group_id,
                total=_usd(4000),
                invitations=[
                    ge.MemberInvitation(
                        member_id=m,
                        share=_usd(1000),
                        payment_id=f"{group_id}-{m}",
                        payment_link=f"https://pay.test/{group_id}/{m}",
                    )
                    for m in MEMBERS
                ],
            ),
        )
    ]
    for left, m in enumerate(reversed(MEMBERS)):
        pid = f"{group_id}-{m}"
        events.append(
            (
                "payment",
                pe.PaymentSucceeded(
                    payment_id=pid, group_id=group_id, member_id=m, amount=_usd(1000)
                ),
            )
        )
        events.append(
            (
                "group",
                ge.MemberPaid(
                    group_id=group_id,
                    member_id=m,
                    payment_id=pid,
                    amount=_usd(1000),
                    remaining_members=left,
                ),
            )
        )
    events.append(("group", ge.GroupConfirmed(group_id=group_id, order_id=f"o-{group_id}")))
    for m in MEMBERS:
        events.append(
            (
                "payment",
                pe.PaymentCaptured(
                    payment_id=f"{group_id}-{m}", group_id=group_id, member_id=m, amount=_usd(1000)
                ),
            )
        )
    return events


async def run_checkout(
    group_id: str,
    *,
    wire: WireCounter,
    consumer_uow: Callable[[], NotificationUnitOfWork],
    sender: Sender,
    group_handlers: GroupEventHandlers,
    costs: Costs,
) -> None:
    """Apply one checkout's events and let the sender deliver; count every operation."""
    routes = {**group_handlers.handlers(), **PAYMENT_HANDLERS}
    for stream, message in checkout_events(group_id):
        event = new_event(group_id, message)
        before = wire.snapshot()
        # what mppo.platform.inbox.EventConsumer does with one new event
        async with consumer_uow() as uow:
            assert await uow.record_inbox(DURABLE[stream], event)
            await routes[type(message)](message, uow)
            await uow.commit()
        costs.add(f"consume {event.event_type}", wire.snapshot().minus(before))
        if stream == "group":
            before = wire.snapshot()
            while await sender.work():  # the loop: again at once while a round says "more"
                pass
            costs.add(f"send after {event.event_type}", wire.snapshot().minus(before))


@pytest_asyncio.fixture(loop_scope="session")
async def counted_engine(fresh_database: str) -> AsyncIterator[tuple[AsyncEngine, WireCounter]]:
    await upgrade_head(MIGRATIONS, fresh_database)
    url = make_url(fresh_database)
    wire = WireCounter(url.host or "127.0.0.1", url.port or 5432)
    port = await wire.start()
    engine = create_engine(
        url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    )
    try:
        yield engine, wire
    finally:
        await engine.dispose()
        await wire.close()


def sender_unit_of_work(engine: AsyncEngine) -> Callable[[], NotificationUnitOfWork]:
    """The sender's units of work, as bootstrap builds them (autocommit)."""
    sessions = sender_sessions(engine)
    return lambda: NotificationUnitOfWork(sessions)


async def measure(engine: AsyncEngine, wire: WireCounter, monkeypatch: pytest.MonkeyPatch) -> Costs:
    """The costs of the second of two checkouts (the first warms the caches)."""
    sessions = create_sessionmaker(engine)

    def consumer_uow() -> NotificationUnitOfWork:
        return NotificationUnitOfWork(sessions)

    store = MessageStore()
    server = await start_smtp_server(store, "127.0.0.1", 0)
    smtp_port = server.sockets[0].getsockname()[1]
    contacts = FakeContacts()
    mailer = SmtpMailer(
        smtp_addr=f"127.0.0.1:{smtp_port}",
        sink_addr="",
        mail_from="MPPO <no-reply@mppo.local>",
        timeout=5.0,
    )
    sender = Sender(
        sender_unit_of_work(engine),
        contacts,
        mailer,
        None,
        SenderPolicy(poll_seconds=30.0),
    )
    handlers = GroupEventHandlers(contacts, webhook_enabled=False, wake=sender.wake)
    try:
        warm, measured = f"g-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
        for group_id in (warm, measured):
            contacts.groups[group_id] = [
                contact(m, "HOST" if m == "host" else "GUEST") for m in MEMBERS
            ]
        await run_checkout(
            warm,
            wire=wire,
            consumer_uow=consumer_uow,
            sender=sender,
            group_handlers=handlers,
            costs=Costs(),
        )
        costs = Costs()
        _count_sink(monkeypatch, costs.smtp)
        stored = len(store.messages)
        await run_checkout(
            measured,
            wire=wire,
            consumer_uow=consumer_uow,
            sender=sender,
            group_handlers=handlers,
            costs=costs,
        )
        costs.mails = len(store.messages) - stored
        before = wire.snapshot()
        assert await sender.work() is False
        costs.add("idle poll", wire.snapshot().minus(before))
        close = getattr(mailer, "close", None)
        if close is not None:
            await close()
    finally:
        server.close()
        await server.wait_closed()
    return costs


#: after the diet: (transactions, statements, round trips) per operation, at most; before it
#: in the comments (every unit of work was BEGIN ... COMMIT, the sender's too)
BOUNDS: dict[str, tuple[int, int, int]] = {
    # inbox row + the event's notifications in one INSERT (before: one INSERT per row: 1, 5, 7)
    "consume group.opened": (1, 2, 4),
    "consume group.confirmed": (1, 2, 4),
    # inbox row + payment fact + notification rows (before: the same 1, 3, 5 per event)
    "consume member.paid": (4, 12, 20),
    # inbox row + payment fact (before: the same, 1, 2, 4 per event)
    "consume payment.succeeded": (4, 8, 16),
    "consume payment.captured": (4, 8, 16),
    # claim + record, one autocommit statement each; no empty round after it
    # (before: claim, mark sent, then an empty claim, each BEGIN/statement/COMMIT: 3, 3, 9)
    "send after group.opened": (2, 2, 2),
    "send after group.confirmed": (2, 2, 2),
    "send after member.paid": (8, 8, 8),  # four wake-ups (before: 12, 12, 36)
    # one autocommit claim (before: 1, 1, 3)
    "idle poll": (1, 1, 1),
}
#: the whole checkout (before: 33 transactions, 57 statements, 123 round trips)
CHECKOUT_BOUND = (27, 45, 73)


async def test_a_checkout_of_four_costs_at_most(
    counted_engine: tuple[AsyncEngine, WireCounter], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, wire = counted_engine
    costs = await measure(engine, wire, monkeypatch)
    report = costs.report()
    assert costs.mails == 12, report
    for op, (transactions, statements, round_trips) in BOUNDS.items():
        got = report["per_op"][op]
        assert got["transactions"] <= transactions, (op, report)
        assert got["statements"] <= statements, (op, report)
        assert got["round_trips"] <= round_trips, (op, report)
    for op, got in report["per_op"].items():
        if op.startswith("send") or op == "idle poll":
            assert got["begin"] == 0, (op, report)  # the sender runs in autocommit
    total = report["checkout"]
    assert total["transactions"] <= CHECKOUT_BOUND[0], report
    assert total["statements"] <= CHECKOUT_BOUND[1], report
    assert total["round_trips"] <= CHECKOUT_BOUND[2], report
    # SMTP: the connections of the first checkout carry the second's twelve messages
    # (before: a connection per message: 12 x connect, EHLO, MAIL, RCPT, DATA, QUIT)
    smtp = report["smtp"]
    assert smtp["connections"] == 0, report
    assert smtp.get("EHLO", 0) == 0, report
    assert (smtp["MAIL"], smtp["RCPT"], smtp["DATA"]) == (12, 12, 12), report
    assert smtp.get("QUIT", 0) <= POOL_SIZE, report  # when the mailer closes its pool
