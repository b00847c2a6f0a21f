"""The order stack for saga tests: real order service process, real sandbox merchant, real
Postgres/Redis/NATS, and the payment service (a local gRPC PaymentService with a ledger until
the real one can capture)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from mppo.platform import messaging
from mppo.platform.event_types import decode_event, new_event
from mppo.platform.events import Event
from mppo.platform.identity import service_metadata
from tests.integration.order.fake_payments import FakePaymentService, start_fake_payments
from tests.support.sandbox_merchant import TEST_SECRET, MerchantProcess, start_merchant
from tests.support.services import ServiceProcess, start_service, wait_serving

TERMINAL = {order_pb2.ORDER_STATUS_CONFIRMED, order_pb2.ORDER_STATUS_FAILED}


@dataclass
class OrderStack:
    infra: Infra
    prefix: str
    database_url: str
    merchant: MerchantProcess
    payments: FakePaymentService
    payment_addr: str
    order: ServiceProcess
    nats: NatsClient
    js: JetStreamContext
    log_dir: Path

    def order_env(self, **extra: str) -> dict[str, str]:
        return {
            "MPPO_MERCHANT_ADDR": self.merchant.addr,
            "MPPO_MERCHANT_SECRET": TEST_SECRET,
            "MPPO_MERCHANT_TIMEOUT": "1",
            "MPPO_MERCHANT_ATTEMPTS": "3",
            "MPPO_PAYMENT_ADDR": self.payment_addr,
            "MPPO_ORDER_LEASE_SECONDS": "3",
            "MPPO_ORDER_POLL_SECONDS": "0.5",
            "MPPO_ORDER_MAX_ATTEMPTS": "3",
            **extra,
        }

    def start_order(self, **extra: str) -> ServiceProcess:
        return start_service(
            "order",
            database_url=self.database_url,
            redis_url=self.infra.redis_url,
            nats_url=self.infra.nats_url,
            nats_prefix=self.prefix,
            log_dir=self.log_dir,
            env=self.order_env(**extra),
        )

    def finalized(
        self,
        lines: list[tuple[str, int, int]],
        *,
        fees: int = 0,
        tax: int = 0,
        tip: int = 0,
        members: int = 2,
        decline_capture: int | None = None,
    ) -> group_events_pb2.GroupFinalized:
        """A GroupFinalized for `lines` (sku, qty, unit price) whose shares are authorized."""
        group_id = str(uuid.uuid4())  # ids we issue are UUIDs (the services check their shape)
        total = sum(q * p for _, q, p in lines) + fees + tax + tip
        amounts = [total // members] * members
        amounts[0] += total - sum(amounts)
        shares = []
        for index, amount in enumerate(amounts):
            payment_id = str(uuid.uuid4())
            self.payments.authorize(payment_id, amount, decline_capture=index == decline_capture)
            shares.append(
                group_events_pb2.FinalizedShare(
                    member_id=str(uuid.uuid4()),
                    payment_id=payment_id,
                    amount=money_pb2.Money(amount_minor=amount, currency_code="USD"),
                )
            )
        return group_events_pb2.GroupFinalized(
            group_id=group_id,
            merchant_id="sandbox",
            items=[
                cart_pb2.LineItem(line_id=f"l{i}", sku=s, name=s, quantity=q, unit_price_minor=p)
                for i, (s, q, p) in enumerate(lines)
            ],
            fees_minor=fees,
            tax_minor=tax,
            tip_minor=tip,
            total=money_pb2.Money(amount_minor=total, currency_code="USD"),
            shares=shares,
            host_user_id="host",
        )

    async def publish(
        self, message: group_events_pb2.GroupFinalized, event_id: str | None = None
    ) -> Event:
        event = new_event(message.group_id, message)
        if event_id is not None:
            event = Event(
                event_id, event.event_type, event.aggregate_id, event.payload, event.occurred_at
            )
        await messaging.publish_event(self.js, event, self.prefix)
        return event

    async def order_for_group(
        self, group_id: str, *, within: float = 30, addr: str | None = None
    ) -> order_pb2.Order:
        """Poll GetOrderByGroup until the order is terminal."""
        deadline = asyncio.get_running_loop().time() + within
        last: order_pb2.Order | None = None
        async with grpc.aio.insecure_channel(addr or self.order.addr) as channel:
            stub = order_service_pb2_grpc.OrderServiceStub(channel)
            while asyncio.get_running_loop().time() < deadline:
                try:
                    reply = await stub.GetOrderByGroup(
                        order_service_pb2.GetOrderByGroupRequest(group_id=group_id),
                        metadata=service_metadata("test"),
                        timeout=2,
                    )
                    last = reply.order
                    if last.status in TERMINAL:
                        return last
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                        raise
                await asyncio.sleep(0.2)
        raise AssertionError(
            f"order for {group_id} not finished: {last}\n{self.order.log_text()[-4000:]}"
        )

    async def order_events(
        self, event_type: str, order_id: str, *, within: float = 10
    ) -> list[Any]:
        """Every `event_type` event published for `order_id` (waits for at least one)."""
        subject = messaging.subject_for(event_type, self.prefix)
        stream = messaging.stream_name("MPPO_ORDER", self.prefix)
        sub = await self.js.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        found: list[Any] = []
        deadline = asyncio.get_running_loop().time() + within
        try:
            while asyncio.get_running_loop().time() < deadline:
                try:
                    msgs = await sub.fetch(50, timeout=0.5)
                except Exception:
                    msgs = []
                for msg in msgs:
                    await msg.ack()
                    message = decode_event(Event.from_msg(msg))
                    if getattr(message, "order_id", "") == order_id:
                        found.append(message)
                if found and not msgs:
                    return found
        finally:
            await sub.unsubscribe()
        return found


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def order_stack(infra: Infra, tmp_path_factory: Any) -> AsyncIterator[OrderStack]:
    log_dir = tmp_path_factory.mktemp("order-stack")
    prefix = f"t{uuid.uuid4().hex[:6]}"
    database_url = await infra.create_database(f"t_{uuid.uuid4().hex[:12]}")
    merchant = await start_merchant(log_dir)
    payment_addr = f"127.0.0.1:{free_port()}"
    server, fake = await start_fake_payments(payment_addr)
    nats = await messaging.connect(infra.nats_url)
    stack = OrderStack(
        infra,
        prefix,
        database_url,
        merchant,
        fake,
        payment_addr,
        cast(ServiceProcess, None),  # started just below, with the stack's settings
        nats,
        nats.jetstream(),
        log_dir,
    )
    stack.order = stack.start_order()
    try:
        await wait_serving(stack.order)
        yield stack
    finally:
        stack.order.stop()
        merchant.stop()
        await server.stop(None)
        await nats.close()
