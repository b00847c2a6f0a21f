"""The group service against the real payment service, the real sandbox provider and the
webhook bridge: members pay through their hosted links, the payment service publishes
payment.succeeded, the group finalizes once; a CANCEL deadline voids the holds, and a payment
made after the expiry is voided too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from mppo.group.v1 import group_pb2
from mppo.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from tests.integration.group.conftest import group_stack
from tests.integration.group.harness import (
    Stack,
    create_request,
    eventually,
    of_type,
    open_group,
    wait_status,
)
from tests.support.sandbox import SandboxProcess, start_sandbox, wait_ready
from tests.support.services import start_service, wait_serving
from tests.support.webhook_bridge import webhook_bridge


@dataclass
class RealStack:
    group: Stack
    sandbox: SandboxProcess
    payments: payment_service_pb2_grpc.PaymentServiceAsyncStub

    async def payment(self, payment_id: str) -> payment_pb2.Payment:
        reply = await self.payments.GetPayment(
            payment_service_pb2.GetPaymentRequest(payment_id=payment_id),
            metadata=(("x-mppo-service", "tests"),),
            timeout=10,
        )
        return reply.payment


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def real(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealStack]:
    log_dir = tmp_path_factory.mktemp("group-real")
    payment_addr = f"127.0.0.1:{free_port()}"
    pay_db = await infra.create_database(f"pay_{uuid.uuid4().hex[:10]}")
    async with webhook_bridge(payment_addr) as bridge:
        sandbox = start_sandbox(log_dir, webhook_url=bridge.webhook_url("sandbox"))
        try:
            await wait_ready(sandbox)
            async with group_stack(infra, payment_addr, log_dir) as stack:
                payment = start_service(
                    "payment",
                    database_url=pay_db,
                    redis_url=infra.redis_url,
                    nats_url=infra.nats_url,
                    nats_prefix=stack.prefix,
                    log_dir=log_dir,
                    addr=payment_addr,
                    env={
                        "MPPO_SANDBOX_ADDR": sandbox.addr,
                        "MPPO_PAYMENT_RECONCILE_INTERVAL": "0.5",
                        "MPPO_PAYMENT_RECONCILE_MAX_INTERVAL": "2",
                    },
                )
                try:
                    await wait_serving(payment, within=40)
                    async with grpc.aio.insecure_channel(payment_addr) as channel:
                        yield RealStack(
                            stack, sandbox, payment_service_pb2_grpc.PaymentServiceStub(channel)
                        )
                finally:
                    payment.stop()
        finally:
            sandbox.stop()


async def test_four_members_pay_through_the_sandbox_and_the_group_finalizes_once(
    real: RealStack,
) -> None:
    stack = real.group
    group = await open_group(stack, create_request(total=1001, guests=3))
    assert [m.share.amount_minor for m in group.members] == [251, 250, 250, 250]
    links = [m.payment_link for m in group.members]
    assert all(links)
    results = await asyncio.gather(*(real.sandbox.pay(link) for link in links))
    assert len(results) == 4
    final = await wait_status(stack, group, group_pb2.GROUP_STATUS_PENDING, within=30)
    assert final.amount_secured.amount_minor == 1001
    events = await stack.events(group.group_id)
    assert len(of_type(events, "member.paid")) == 4
    assert len(of_type(events, "group.fully_paid")) == 1
    (finalized,) = of_type(events, "group.finalized")
    assert {s.payment_id for s in finalized.shares} == {m.payment_id for m in group.members}
    for member in group.members:
        payment = await real.payment(member.payment_id)
        assert payment.status == payment_pb2.PAYMENT_STATUS_AUTHORIZED


async def test_cancel_deadline_voids_the_holds_and_a_late_payment(real: RealStack) -> None:
    stack = real.group
    group = await open_group(stack, create_request(total=900, guests=2, deadline_in=3.0))
    _, early, late = group.members
    await real.sandbox.pay(early.payment_link)
    await eventually(
        lambda: real.payment(early.payment_id),
        lambda p: p.status == payment_pb2.PAYMENT_STATUS_AUTHORIZED,
    )
    await wait_status(stack, group, group_pb2.GROUP_STATUS_EXPIRED, within=20)
    (expired,) = of_type(await stack.events(group.group_id), "group.expired")
    assert early.payment_id in expired.payment_ids
    voided = await eventually(
        lambda: real.payment(early.payment_id),
        lambda p: p.status == payment_pb2.PAYMENT_STATUS_VOIDED,
        within=30,
    )
    assert voided.status == payment_pb2.PAYMENT_STATUS_VOIDED
    # the last member pays after the expiry (if the page still takes it): never kept
    answer = await real.sandbox.pay(late.payment_link)
    if answer.get("outcome") == "requires_capture":  # the sandbox still took it
        final = await eventually(
            lambda: real.payment(late.payment_id),
            lambda p: p.status == payment_pb2.PAYMENT_STATUS_VOIDED,
            within=30,
        )
    else:
        final = await real.payment(late.payment_id)
    assert final.status not in (
        payment_pb2.PAYMENT_STATUS_AUTHORIZED,
        payment_pb2.PAYMENT_STATUS_CAPTURED,
    ), answer
