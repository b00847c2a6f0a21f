"""One payment stack per test module: the real payment service process, the real sandbox
provider process and the webhook bridge, on the session's Postgres, Redis and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from mppo.common.v1.money_pb2 import Money
from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.identity import service_metadata
from tests.support.sandbox import SandboxProcess, start_sandbox, wait_ready
from tests.support.services import ServiceProcess, service_channel, start_service, wait_serving
from tests.support.webhook_bridge import WebhookBridge, webhook_bridge

SANDBOX = payment_pb2.PROVIDER_SANDBOX
#: open methods (GetPayment, ListPayments): any of our processes may read
METADATA = service_metadata("tests")
#: service-only methods, called as the service that calls them in the system
#: (payment_svc.bootstrap.SERVICE_ONLY): the group service opens payments, the order service
#: captures, voids and refunds
AS_GROUP = service_metadata("group")
AS_ORDER = service_metadata("order")


def label_id(label: str) -> str:
    """The id a test calls `label` ("g-idem-1", "m1"), shaped as the ids our services issue
    (a lower-case UUID: the runtime refuses other shapes for group and member ids); an id
    that already has that shape is kept."""
    try:
        if str(uuid.UUID(label)) == label:
            return label
    except ValueError:
        pass
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mppo-test:{label}"))


@dataclass
class PaymentStack:
    """What a payment test talks to."""

    service: ServiceProcess
    sandbox: SandboxProcess
    bridge: WebhookBridge
    stub: payment_service_pb2_grpc.PaymentServiceAsyncStub
    database_url: str
    nats_prefix: str

    async def create(
        self, amount: int = 1250, currency: str = "USD", group_id: str = "", member: str = "m1"
    ) -> payment_pb2.Payment:
        """A new payment intent (new group unless given; labels become ids via `label_id`)."""
        reply = await self.stub.CreatePaymentIntent(
            payment_service_pb2.CreatePaymentIntentRequest(
                group_id=label_id(group_id) if group_id else str(uuid.uuid4()),
                member_id=label_id(member),
                attempt=1,
                amount=Money(amount_minor=amount, currency_code=currency),
                description="Pizza night share",
            ),
            metadata=AS_GROUP,
            timeout=20,
        )
        return reply.payment

    async def get(self, payment_id: str) -> payment_pb2.Payment:
        """The payment now."""
        reply = await self.stub.GetPayment(
            payment_service_pb2.GetPaymentRequest(payment_id=payment_id),
            metadata=METADATA,
            timeout=10,
        )
        return reply.payment

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows from the payment database."""
        conn = await asyncpg.connect(self.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def events_of(self, payment_id: str) -> list[str]:
        """The payment.* events written for a payment (outbox rows), in order."""
        rows = await self.query(
            "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY occurred_at",
            payment_id,
        )
        return [r["event_type"] for r in rows]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PaymentStack]:
    """Start sandbox, bridge and payment service; stop them all afterwards."""
    log_dir: Path = tmp_path_factory.mktemp("payment")
    database_url = await infra.create_database(f"pay_{uuid.uuid4().hex[:10]}")
    prefix = f"t{uuid.uuid4().hex[:6]}"
    addr = f"127.0.0.1:{free_port()}"
    async with webhook_bridge(addr) as bridge:
        sandbox = start_sandbox(log_dir, webhook_url=bridge.webhook_url("sandbox"))
        service: ServiceProcess | None = None
        try:
            await wait_ready(sandbox)
            service = start_service(
                "payment",
                database_url=database_url,
                redis_url=infra.redis_url,
                nats_url=infra.nats_url,
                nats_prefix=prefix,
                log_dir=log_dir,
                addr=addr,
                env={
                    "MPPO_SANDBOX_ADDR": sandbox.addr,
                    "MPPO_PAYMENT_RECONCILE_INTERVAL": "0.5",
                    "MPPO_PAYMENT_RECONCILE_MAX_INTERVAL": "2",
                    "MPPO_PAYMENT_RETRY_BACKOFF": "0.05",
                },
            )
            await wait_serving(service)
            async with service_channel(addr) as channel:
                yield PaymentStack(
                    service=service,
                    sandbox=sandbox,
                    bridge=bridge,
                    stub=payment_service_pb2_grpc.PaymentServiceStub(channel),
                    database_url=database_url,
                    nats_prefix=prefix,
                )
        finally:
            if service is not None:
                code = service.stop()
                assert code == 0, service.log_text()
            sandbox.stop()
