"""The saga with the real payment service and the real sandbox provider: payments are created
through PaymentService, authorized on the sandbox's hosted page, and the sandbox's ledger shows
where the money ended up (captured for a confirmed order; released or refunded otherwise)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_pb2
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from mppo.platform import messaging
from mppo.platform.event_types import new_event
from mppo.platform.identity import service_metadata
from tests.integration.order.conftest import OrderStack
from tests.support.sandbox import (
    CARD_CAPTURE_FAILS,
    CARD_SUCCESS,
    SandboxProcess,
    start_sandbox,
    wait_ready,
)
from tests.support.sandbox_merchant import start_merchant
from tests.support.services import ServiceProcess, start_service, wait_serving
from tests.support.webhook_bridge import webhook_bridge

P = payment_pb2


@dataclass
class RealStack:
    orders: OrderStack
    sandbox: SandboxProcess
    payments: payment_service_pb2_grpc.PaymentServiceAsyncStub

    async def authorized(self, group_id: str, member: str, amount: int, card: str) -> str:
        reply = await self.payments.CreatePaymentIntent(
            payment_service_pb2.CreatePaymentIntentRequest(
                group_id=group_id,
                member_id=member,
                attempt=1,
                amount=money_pb2.Money(amount_minor=amount, currency_code="USD"),
                description="order test share",
            ),
            metadata=service_metadata("group"),
            timeout=20,
        )
        payment = reply.payment
        outcome = await self.sandbox.pay(payment.payment_link, card)
        assert outcome["outcome"] == "requires_capture", outcome
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:
            got = await self.payments.GetPayment(
                payment_service_pb2.GetPaymentRequest(payment_id=payment.payment_id),
                metadata=service_metadata("group"),
                timeout=5,
            )
            if got.payment.status == P.PAYMENT_STATUS_AUTHORIZED:
                return payment.payment_id
            await asyncio.sleep(0.1)
        raise AssertionError(f"{payment.payment_id} never authorized")

    async def finalized(
        self, lines: list[tuple[str, int, int]], cards: list[str]
    ) -> group_events_pb2.GroupFinalized:
        group_id = str(uuid.uuid4())  # ids we issue are UUIDs (the services check their shape)
        total = sum(q * p for _, q, p in lines)
        amounts = [total // len(cards)] * len(cards)
        amounts[0] += total - sum(amounts)
        members = [str(uuid.uuid4()) for _ in cards]
        payment_ids = await asyncio.gather(
            *(
                self.authorized(group_id, member, amount, card)
                for member, amount, card in zip(members, amounts, cards, strict=True)
            )
        )
        return group_events_pb2.GroupFinalized(
            group_id=group_id,
            merchant_id="sandbox",
            items=[
                cart_pb2.LineItem(line_id=f"l{i}", sku=s, name=s, quantity=q, unit_price_minor=p)
                for i, (s, q, p) in enumerate(lines)
            ],
            total=money_pb2.Money(amount_minor=total, currency_code="USD"),
            shares=[
                group_events_pb2.FinalizedShare(
                    member_id=member,
                    payment_id=pid,
                    amount=money_pb2.Money(amount_minor=amount, currency_code="USD"),
                )
                for member, pid, amount in zip(members, payment_ids, amounts, strict=True)
            ],
        )

    async def run(self, group: group_events_pb2.GroupFinalized) -> order_pb2.Order:
        await messaging.publish_event(
            self.orders.js, new_event(group.group_id, group), self.orders.prefix
        )
        return await self.orders.order_for_group(group.group_id, within=40)

    async def ledger(self, group_id: str) -> dict[str, Any]:
        """The sandbox ledger of the group, once nothing is in flight."""
        ledger: dict[str, Any] = await self.sandbox.ledger(group_id=group_id)
        return ledger


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def real(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealStack]:
    log_dir: Path = tmp_path_factory.mktemp("order-real")
    prefix = f"t{uuid.uuid4().hex[:6]}"
    payment_addr = f"127.0.0.1:{free_port()}"
    merchant = await start_merchant(log_dir)
    nats = await messaging.connect(infra.nats_url)
    payment: ServiceProcess | None = None
    order: ServiceProcess | None = None
    async with webhook_bridge(payment_addr) as bridge:
        sandbox = start_sandbox(log_dir, webhook_url=bridge.webhook_url("sandbox"))
        try:
            await wait_ready(sandbox)
            payment = start_service(
                "payment",
                database_url=await infra.create_database(f"pay_{uuid.uuid4().hex[:10]}"),
                redis_url=infra.redis_url,
                nats_url=infra.nats_url,
                nats_prefix=prefix,
                log_dir=log_dir,
                addr=payment_addr,
                env={"MPPO_SANDBOX_ADDR": sandbox.addr, "MPPO_PAYMENT_RETRY_BACKOFF": "0.05"},
            )
            orders = OrderStack(
                infra,
                prefix,
                await infra.create_database(f"t_{uuid.uuid4().hex[:12]}"),
                merchant,
                None,  # type: ignore[arg-type]  # the real payment service is used instead
                payment_addr,
                None,  # type: ignore[arg-type]
                nats,
                nats.jetstream(),
                log_dir,
            )
            order = orders.order = orders.start_order()
            await wait_serving(payment)
            await wait_serving(order)
            async with grpc.aio.insecure_channel(payment_addr) as channel:
                yield RealStack(
                    orders, sandbox, payment_service_pb2_grpc.PaymentServiceStub(channel)
                )
        finally:
            for proc in (order, payment):
                if proc is not None:
                    proc.stop()
            sandbox.stop()
            merchant.stop()
            await nats.close()


async def test_confirmed_order_captures_every_share_in_the_ledger(real: RealStack) -> None:
    group = await real.finalized(
        [("PIZZA-MARGHERITA", 2, 1200), ("SODA-CAN", 1, 250)], [CARD_SUCCESS] * 2
    )
    order = await real.run(group)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, order
    ledger = await real.ledger(group.group_id)
    assert ledger["totals"]["capture"] == 2650
    assert ledger["kept"] == 2650
    assert ledger["held"] == 0
    assert len(await real.orders.merchant.orders_for(order.order_id)) == 1


async def test_merchant_rejection_keeps_no_money(real: RealStack) -> None:
    await real.orders.merchant.control("faults", {"action": "place", "fault": "reject"})
    group = await real.finalized([("TIRAMISU", 2, 700)], [CARD_SUCCESS] * 2)
    order = await real.run(group)
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_MERCHANT_REJECTED
    ledger = await real.ledger(group.group_id)
    assert ledger["totals"]["hold"] == 1400
    assert ledger["totals"]["release"] == 1400
    assert ledger["held"] == 0
    assert ledger["kept"] == 0
    failed = await real.orders.order_events("order.failed", order.order_id)
    assert len(failed) == 1


async def test_failed_capture_refunds_what_was_captured(real: RealStack) -> None:
    group = await real.finalized([("PIZZA-PEPPERONI", 2, 1450)], [CARD_SUCCESS, CARD_CAPTURE_FAILS])
    order = await real.run(group)
    assert order.status == order_pb2.ORDER_STATUS_FAILED, order
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED
    ledger = await real.ledger(group.group_id)
    assert ledger["totals"]["capture"] == 1450  # the first share, refunded below
    assert ledger["totals"]["refund"] == 1450
    assert ledger["kept"] == 0
    assert ledger["held"] == 0
    merchant_orders = await real.orders.merchant.orders_for(order.order_id)
    assert [m["status"] for m in merchant_orders] == ["cancelled"]
    assert len(await real.orders.order_events("order.failed", order.order_id)) == 1


async def test_out_of_stock_voids_every_hold(real: RealStack) -> None:
    group = await real.finalized([("TRUFFLE-SPECIAL", 2, 3200)], [CARD_SUCCESS] * 2)  # stock 1
    order = await real.run(group)
    assert order.failure_reason == order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK
    ledger = await real.ledger(group.group_id)
    assert ledger["totals"]["hold"] == 6400
    assert ledger["totals"]["release"] == 6400
    assert ledger["totals"]["capture"] == 0
    assert ledger["held"] == 0
    failed = await real.orders.order_events("order.failed", order.order_id)
    assert [f.reason for f in failed] == [order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK]
