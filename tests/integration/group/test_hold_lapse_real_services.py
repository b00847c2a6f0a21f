"""Holds that never lapse, with every service real: the group service (two replicas and a
standalone scheduler), the payment service over the sandbox provider and the webhook bridge,
and the order service over the sandbox merchant, on one NATS prefix.

Nobody waits days: the sandbox's clock is set back (``POST /_sandbox/clock``) so the
``capture_before`` it stamps on a hold placed now lies 30 minutes ahead, inside the payment
service's warning window. The chain under test is the real one: the sandbox's charge → the
payment's ``authorization_expire_time`` → the reconciler's ``payment.authorization_expiring`` →
the group's hold policy (docs/payment.md, "Holds that never lapse"):

- every share secured: the group is finalized and the order captures each share before its
  hold lapses (CONFIRMED, the ledger keeps the total);
- a share secured, others not, CANCEL, the hold lapsing before the deadline (hours away) plus
  the hold margin: the group does not wait for its deadline, nor does it end now; it becomes
  due at the latest safe moment, ``lapse - margin``, and expires then, the history saying whose
  hold lapses when, and the hold is voided;
- a hold lapsing at or after the deadline plus the margin changes nothing: the group keeps its
  deadline;
- HOST_PAYS_REMAINING, the hold lapsing too soon for the host's grace to fit before it: the
  host is asked for the rest now, pays, and the order is confirmed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from mppo.group.v1 import group_pb2
from mppo.group.v1 import group_service_pb2 as gs
from mppo.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from tests.integration.group.conftest import group_stack
from tests.integration.group.harness import (
    Stack,
    create_request,
    eventually,
    get_group,
    of_type,
    open_group,
    user_md,
    wait_status,
)
from tests.support.sandbox import SandboxProcess, start_sandbox, wait_ready
from tests.support.sandbox_merchant import TEST_SECRET, MerchantProcess, start_merchant
from tests.support.services import ServiceProcess, start_service, wait_serving
from tests.support.webhook_bridge import webhook_bridge

G = group_pb2
P = payment_pb2
SERVICE_MD = (("x-mppo-service", "tests"),)

#: the sandbox's holds last 7 days; the payment service warns an hour before one lapses
HOLD_SECONDS = 7 * 86400
WARNING_SECONDS = 3600
#: the group service's hold margin (the order's time to capture before a hold lapses)
MARGIN_SECONDS = 1200
#: a hold placed now lapses this soon once the sandbox's clock is set back: a group with such a
#: hold is due MARGIN_SECONDS before, i.e. this many seconds after the hold (paid, warned by then)
DUE_AFTER_HOLD = 45
LAPSES_IN = MARGIN_SECONDS + DUE_AFTER_HOLD
#: ... or enters the warning window this long after it is placed (everyone has paid by then)
WARNED_AFTER = 20
#: the groups' deadlines lie beyond the lapse: without the policy they would wait for it
DEADLINE_IN = 3 * 3600


@dataclass
class LapseStack:
    group: Stack
    sandbox: SandboxProcess
    merchant: MerchantProcess
    payments: payment_service_pb2_grpc.PaymentServiceAsyncStub
    orders: order_service_pb2_grpc.OrderServiceAsyncStub
    payment_db: str
    #: (re)starts the order service on its address and database
    start_order: Callable[[], ServiceProcess]
    order_proc: ServiceProcess

    async def payment(self, payment_id: str) -> P.Payment:
        reply = await self.payments.GetPayment(
            payment_service_pb2.GetPaymentRequest(payment_id=payment_id),
            metadata=SERVICE_MD,
            timeout=10,
        )
        return reply.payment

    async def authorized(self, payment_id: str) -> P.Payment:
        return await eventually(
            lambda: self.payment(payment_id),
            lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED,
            within=30,
        )

    async def lapse_reported(self, payment_id: str) -> datetime:
        """When the payment's hold lapses once the sandbox's ``capture_before`` is known (the
        webhook announcing the hold does not carry it: the payment's next re-read does; until
        then the hold lapses after the provider's configured window)."""
        payment = await eventually(
            lambda: self.payment(payment_id),
            lambda p: (
                p.HasField("authorization_expire_time")
                and _stamp(p) - datetime.now(UTC) < timedelta(days=1)
            ),
            within=30,
        )
        return _stamp(payment)

    async def order_of(self, group: G.GroupOrder) -> order_pb2.Order | None:
        try:
            reply = await self.orders.GetOrderByGroup(
                order_service_pb2.GetOrderByGroupRequest(group_id=group.group_id),
                metadata=user_md(group.host_user_id),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return reply.order

    async def history(self, group: G.GroupOrder) -> list[G.StatusChange]:
        reply = await self.group.stub().GetGroupHistory(
            gs.GetGroupHistoryRequest(group_id=group.group_id),
            metadata=user_md(group.host_user_id),
        )
        return list(reply.changes)

    async def holds_lapse_in(self, seconds: float) -> Any:
        """Set the sandbox's clock back: a hold placed now lapses in `seconds`."""
        return await self.sandbox.clock(-(HOLD_SECONDS - seconds))

    async def sent(self, event_type: str, payment_ids: list[str]) -> dict[str, int]:
        """How many `event_type` events the payment service put in its outbox, by payment."""
        connection = await asyncpg.connect(self.payment_db)
        try:
            rows = await connection.fetch(
                "SELECT aggregate_id, count(*) AS n FROM outbox"
                " WHERE event_type = $1 AND aggregate_id = ANY($2) GROUP BY aggregate_id",
                event_type,
                payment_ids,
            )
        finally:
            await connection.close()
        return {str(r["aggregate_id"]): int(r["n"]) for r in rows}


async def open_new_group(stack: Stack, request: gs.CreateGroupRequest) -> G.GroupOrder:
    """Create and open a group; while the group service cannot reach the order service to
    price the cart (it reconnects after the order service restarted), creating it again."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            return await open_group(stack, request)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1)


def _stamp(payment: P.Payment) -> datetime:
    assert payment.HasField("authorization_expire_time"), payment
    return payment.authorization_expire_time.ToDatetime(tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def real(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LapseStack]:
    log_dir = tmp_path_factory.mktemp("hold-lapse")
    payment_addr = f"127.0.0.1:{free_port()}"
    order_addr = f"127.0.0.1:{free_port()}"
    payment_db = await infra.create_database(f"pay_{uuid.uuid4().hex[:10]}")
    order_db = await infra.create_database(f"ord_{uuid.uuid4().hex[:10]}")
    merchant = await start_merchant(log_dir)
    procs: list[ServiceProcess] = []
    # the host has a minute to pay what the others did not (HOST_PAYS_REMAINING)
    group_env = {
        "MPPO_GROUP_HOST_GRACE_SECONDS": "60",
        "MPPO_GROUP_HOLD_MARGIN_SECONDS": str(MARGIN_SECONDS),
    }
    async with webhook_bridge(payment_addr) as bridge:
        sandbox = start_sandbox(log_dir, webhook_url=bridge.webhook_url("sandbox"))
        try:
            await wait_ready(sandbox)
            async with group_stack(
                infra, payment_addr, log_dir, group_env, order_addr=order_addr
            ) as stack:
                common: dict[str, Any] = {
                    "redis_url": infra.redis_url,
                    "nats_url": infra.nats_url,
                    "nats_prefix": stack.prefix,
                    "log_dir": log_dir,
                }
                payment = start_service(
                    "payment",
                    database_url=payment_db,
                    addr=payment_addr,
                    env={
                        "MPPO_SANDBOX_ADDR": sandbox.addr,
                        "MPPO_PAYMENT_RECONCILE_INTERVAL": "0.5",
                        "MPPO_PAYMENT_RECONCILE_MAX_INTERVAL": "2",
                        "MPPO_PAYMENT_AUTH_WARNING_SECONDS": str(WARNING_SECONDS),
                    },
                    **common,
                )
                procs.append(payment)

                def start_order() -> ServiceProcess:
                    order = start_service(
                        "order",
                        database_url=order_db,
                        addr=order_addr,
                        env={
                            "MPPO_MERCHANT_ADDR": merchant.addr,
                            "MPPO_MERCHANT_SECRET": TEST_SECRET,
                            "MPPO_MERCHANT_TIMEOUT": "2",
                            "MPPO_PAYMENT_ADDR": payment_addr,
                            "MPPO_GROUP_ADDR": stack.procs[0].addr,
                            "MPPO_ORDER_POLL_SECONDS": "0.5",
                        },
                        **common,
                    )
                    procs.append(order)
                    return order

                order = start_order()
                await asyncio.gather(wait_serving(payment, 40), wait_serving(order, 40))
                async with (
                    grpc.aio.insecure_channel(payment_addr) as pay_channel,
                    grpc.aio.insecure_channel(order_addr) as order_channel,
                ):
                    yield LapseStack(
                        stack,
                        sandbox,
                        merchant,
                        payment_service_pb2_grpc.PaymentServiceStub(pay_channel),
                        order_service_pb2_grpc.OrderServiceStub(order_channel),
                        payment_db,
                        start_order,
                        order,
                    )
        finally:
            for proc in procs:
                proc.stop()
            sandbox.stop()
            merchant.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def lapsing(real: LapseStack) -> AsyncIterator[LapseStack]:
    """The stack with the sandbox's clock set back for one test (holds placed now lapse in
    LAPSES_IN seconds), real time again after."""
    await real.holds_lapse_in(LAPSES_IN)
    try:
        yield real
    finally:
        await real.sandbox.clock(0)


async def test_every_share_secured_is_captured_before_its_hold_lapses(
    lapsing: LapseStack,
) -> None:
    real = lapsing
    stack = real.group
    group = await open_new_group(
        stack, create_request(total=1001, guests=2, deadline_in=DEADLINE_IN)
    )
    payment_ids = [m.payment_id for m in group.members]
    # the holds enter the warning window shortly after everyone has paid (the group is
    # finalized by then), and the order service is down: the holds wait, nearing their lapse
    await real.holds_lapse_in(WARNING_SECONDS + WARNED_AFTER)
    assert real.order_proc.stop() == 0
    try:
        paid_at = datetime.now(UTC)
        await asyncio.gather(*(real.sandbox.pay(m.payment_link) for m in group.members))
        pending = await wait_status(stack, group, G.GROUP_STATUS_PENDING, within=WARNED_AFTER)
        assert pending.amount_secured.amount_minor == 1001
        for payment_id in payment_ids:
            lapse = await real.lapse_reported(payment_id)
            ahead = lapse - paid_at
            assert timedelta(seconds=WARNING_SECONDS) < ahead < timedelta(hours=2), lapse
        # every hold is announced as lapsing; the group, finalized already, needs nothing more
        warned = await eventually(
            lambda: real.sent("payment.authorization_expiring", payment_ids),
            lambda found: set(found) == set(payment_ids),
            within=30,
        )
        assert set(warned.values()) == {1}, warned
        await asyncio.sleep(2)  # time for the group to act on them, if it (wrongly) would
        still = await get_group(stack, group)
        assert still.status == G.GROUP_STATUS_PENDING
    finally:
        real.order_proc = real.start_order()
    await wait_serving(real.order_proc, 40)

    # the order service back: it captures every share before its hold lapses
    confirmed = await wait_status(stack, group, G.GROUP_STATUS_CONFIRMED, within=60)
    order = await real.order_of(confirmed)
    assert order is not None
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order
    assert sum(s.amount.amount_minor for s in order.shares) == 1001
    for payment_id in payment_ids:
        payment = await real.payment(payment_id)
        assert payment.status == P.PAYMENT_STATUS_CAPTURED, payment
        assert payment.update_time.ToDatetime(tzinfo=UTC) < _stamp(payment)
    ledger = await real.sandbox.ledger(group_id=group.group_id)
    assert ledger["kept"] == 1001, ledger
    assert ledger["held"] == 0, ledger
    assert ledger["totals"]["release"] == 0, ledger
    history = await real.history(group)
    assert [(c.from_status, c.to_status) for c in history] == [
        (G.GROUP_STATUS_UNSPECIFIED, G.GROUP_STATUS_DRAFT),
        (G.GROUP_STATUS_DRAFT, G.GROUP_STATUS_OPEN),
        (G.GROUP_STATUS_OPEN, G.GROUP_STATUS_PENDING),
        (G.GROUP_STATUS_PENDING, G.GROUP_STATUS_CONFIRMED),
    ]
    events = await stack.events(group.group_id)
    assert len(of_type(events, "group.finalized")) == 1


async def test_a_lapsing_hold_makes_the_group_due_margin_before_the_lapse_not_now(
    lapsing: LapseStack,
) -> None:
    real = lapsing
    stack = real.group
    group = await open_new_group(
        stack, create_request(total=900, guests=2, deadline_in=DEADLINE_IN)
    )
    host, _, _ = group.members
    outcome = await real.sandbox.pay(host.payment_link)
    assert outcome["outcome"] == "requires_capture", outcome
    await real.authorized(host.payment_id)
    lapse = await real.lapse_reported(host.payment_id)
    assert lapse - datetime.now(UTC) <= timedelta(seconds=LAPSES_IN), lapse
    due = lapse - timedelta(seconds=MARGIN_SECONDS)

    # the deadline is hours away, the hold lapses in about 20 minutes: the group becomes due
    # MARGIN before the lapse, still OPEN until then
    moved = await eventually(
        lambda: get_group(stack, group),
        lambda g: g.deadline.ToDatetime(tzinfo=UTC) < datetime.now(UTC) + timedelta(hours=1),
        within=30,
    )
    assert moved.deadline.ToDatetime(tzinfo=UTC) == due, (moved.deadline, due)
    history = await real.history(group)
    why = history[-1]
    assert (why.from_status, why.to_status) == (G.GROUP_STATUS_OPEN, G.GROUP_STATUS_OPEN), why
    assert why.actor == "system:holds", why
    assert f"the hold of Host's share lapses at {lapse:%Y-%m-%d %H:%M} UTC" in why.reason, why
    assert f"the group is due at {due:%Y-%m-%d %H:%M:%S} UTC" in why.reason, why
    assert why.change_time.ToDatetime(tzinfo=UTC) < due  # it was not due when it moved

    expired = await wait_status(stack, group, G.GROUP_STATUS_EXPIRED, within=DUE_AFTER_HOLD + 40)
    assert expired.deadline.ToDatetime(tzinfo=UTC) == due
    assert "lapses at" in expired.close_reason, expired.close_reason
    assert "Host" in expired.close_reason, expired.close_reason
    history = await real.history(group)
    assert [(c.from_status, c.to_status) for c in history] == [
        (G.GROUP_STATUS_UNSPECIFIED, G.GROUP_STATUS_DRAFT),
        (G.GROUP_STATUS_DRAFT, G.GROUP_STATUS_OPEN),
        (G.GROUP_STATUS_OPEN, G.GROUP_STATUS_OPEN),
        (G.GROUP_STATUS_OPEN, G.GROUP_STATUS_EXPIRED),
    ]
    assert "lapses at" in history[3].reason, history[3]
    assert history[3].change_time.ToDatetime(tzinfo=UTC) >= due  # not a second before

    # nothing kept: the hold is voided at the sandbox, the unpaid links are closed
    voided = await eventually(
        lambda: real.payment(host.payment_id),
        lambda p: p.status == P.PAYMENT_STATUS_VOIDED,
        within=30,
    )
    assert voided.amount_captured.amount_minor == 0
    ledger = await eventually(
        lambda: real.sandbox.ledger(group_id=group.group_id),
        lambda lg: lg["held"] == 0,
        within=30,
    )
    assert ledger["totals"]["hold"] == 300, ledger
    assert ledger["totals"]["release"] == 300, ledger
    assert ledger["kept"] == 0, ledger
    assert await real.order_of(group) is None
    (event,) = of_type(await stack.events(group.group_id), "group.expired")
    assert host.payment_id in event.payment_ids


async def test_a_hold_lapsing_after_the_deadline_and_margin_changes_nothing(
    lapsing: LapseStack,
) -> None:
    real = lapsing
    stack = real.group
    deadline_in = 300
    # holds placed now lapse two minutes after deadline + margin, inside the warning window
    await real.holds_lapse_in(deadline_in + MARGIN_SECONDS + 120)
    group = await open_new_group(
        stack, create_request(total=900, guests=2, deadline_in=deadline_in)
    )
    host, _, _ = group.members
    await real.sandbox.pay(host.payment_link)
    await real.authorized(host.payment_id)
    lapse = await real.lapse_reported(host.payment_id)
    assert lapse >= group.deadline.ToDatetime(tzinfo=UTC) + timedelta(seconds=MARGIN_SECONDS)
    # the payment service warns about it; the group, able to complete in time, keeps its time
    warned = await eventually(
        lambda: real.sent("payment.authorization_expiring", [host.payment_id]),
        lambda found: found.get(host.payment_id) == 1,
        within=30,
    )
    assert warned == {host.payment_id: 1}
    await asyncio.sleep(2)  # time for the group to act on it, if it (wrongly) would
    still = await get_group(stack, group)
    assert still.status == G.GROUP_STATUS_OPEN
    assert still.deadline == group.deadline
    history = await real.history(group)
    assert [(c.from_status, c.to_status) for c in history] == [
        (G.GROUP_STATUS_UNSPECIFIED, G.GROUP_STATUS_DRAFT),
        (G.GROUP_STATUS_DRAFT, G.GROUP_STATUS_OPEN),
    ]


async def test_a_lapsing_hold_asks_the_host_for_the_rest_now(lapsing: LapseStack) -> None:
    real = lapsing
    stack = real.group
    group = await open_new_group(
        stack,
        create_request(
            total=900,
            guests=2,
            deadline_in=DEADLINE_IN,
            policy=G.FALLBACK_POLICY_HOST_PAYS_REMAINING,
        ),
    )
    host, guest, _ = group.members
    await real.sandbox.pay(guest.payment_link)
    await real.authorized(guest.payment_id)

    # the host's share grows now, not at the deadline hours away
    moved = await eventually(
        lambda: get_group(stack, group),
        lambda g: (
            g.members[2].status == G.MEMBER_STATUS_COVERED_BY_HOST
            and g.members[0].payment_link not in ("", host.payment_link)
        ),
        within=40,
    )
    assert moved.status == G.GROUP_STATUS_OPEN
    assert moved.members[0].share.amount_minor == 600
    history = await real.history(group)
    assert [(c.from_status, c.to_status) for c in history][2] == (
        G.GROUP_STATUS_OPEN,
        G.GROUP_STATUS_OPEN,
    )
    assert "the hold of Guest 1's share lapses at" in history[2].reason, history[2]

    # the host pays it all at once on the new link; the order captures both holds in time
    await real.sandbox.pay(moved.members[0].payment_link)
    confirmed = await wait_status(stack, group, G.GROUP_STATUS_CONFIRMED, within=60)
    assert confirmed.amount_secured.amount_minor == 900
    order = await real.order_of(group)
    assert order is not None
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED
    ledger = await eventually(
        lambda: real.sandbox.ledger(group_id=group.group_id),
        lambda lg: lg["kept"] == 900,
        within=30,
    )
    assert ledger["held"] == 0, ledger
    assert ledger["totals"]["capture"] == 900, ledger
