"""The group service against the real payment service, the real sandbox provider and the
webhook bridge (and the real order service over the sandbox merchant, which prices carts):
members pay through their hosted links, the payment service publishes payment.succeeded, the
group finalizes once; a CANCEL deadline voids the holds, and a payment made after the expiry is
voided too. Payment links whose shares are no longer wanted (the host covers the rest, the host
cancels) are closed before the change is announced: their hosted pages refuse payment and no
hold is ever placed. A cart the merchant's catalogue prices differently is refused before
anyone is asked to pay, and no group is created while the merchant cannot be asked."""

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
from mppo.group.v1 import group_service_pb2 as gs
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
from tests.integration.group.test_group_api import violations
from tests.support.sandbox import SandboxProcess, start_sandbox, wait_ready
from tests.support.sandbox_merchant import TEST_SECRET, MerchantProcess, start_merchant
from tests.support.services import start_service, wait_serving
from tests.support.webhook_bridge import webhook_bridge

HOST_PAYS = group_pb2.FALLBACK_POLICY_HOST_PAYS_REMAINING


@dataclass
class RealStack:
    group: Stack
    sandbox: SandboxProcess
    payments: payment_service_pb2_grpc.PaymentServiceAsyncStub
    merchant: MerchantProcess

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
    merchant = await start_merchant(log_dir)
    # the order service only prices carts here: on its own NATS prefix, it places no orders
    order = start_service(
        "order",
        database_url=await infra.create_database(f"ord_{uuid.uuid4().hex[:10]}"),
        redis_url=infra.redis_url,
        nats_url=infra.nats_url,
        nats_prefix=f"o{uuid.uuid4().hex[:6]}",
        log_dir=log_dir,
        env={
            "MPPO_MERCHANT_ADDR": merchant.addr,
            "MPPO_MERCHANT_SECRET": TEST_SECRET,
            "MPPO_MERCHANT_TIMEOUT": "1",
            "MPPO_MERCHANT_ATTEMPTS": "2",
        },
    )
    async with webhook_bridge(payment_addr) as bridge:
        sandbox = start_sandbox(log_dir, webhook_url=bridge.webhook_url("sandbox"))
        try:
            await asyncio.gather(wait_ready(sandbox), wait_serving(order, within=40))
            async with group_stack(infra, payment_addr, log_dir, order_addr=order.addr) as stack:
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
                            stack,
                            sandbox,
                            payment_service_pb2_grpc.PaymentServiceStub(channel),
                            merchant,
                        )
                finally:
                    payment.stop()
        finally:
            sandbox.stop()
            order.stop()
            merchant.stop()


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


async def assert_link_refused(real: RealStack, member: group_pb2.Member) -> None:
    """The member's hosted page refuses payment, and no hold was ever placed on it."""
    answer = await real.sandbox.pay(member.payment_link)
    assert answer.get("outcome") is None, answer
    assert answer["error"]["code"] == "checkout_not_open", answer
    payment = await real.payment(member.payment_id)
    assert payment.status == payment_pb2.PAYMENT_STATUS_VOIDED
    ledger = await real.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["totals"]["hold"] == 0, ledger


async def test_host_pays_remaining_closes_the_old_member_links_before_the_fallback(
    real: RealStack,
) -> None:
    stack = real.group
    # force-finalized by the host
    group = await open_group(stack, create_request(total=900, guests=2, policy=HOST_PAYS))
    _, paid, unpaid = group.members
    await real.sandbox.pay(paid.payment_link)
    await eventually(
        lambda: real.payment(paid.payment_id),
        lambda p: p.status == payment_pb2.PAYMENT_STATUS_AUTHORIZED,
    )
    await eventually(
        lambda: get_group(stack, group),
        lambda g: g.members[1].status == group_pb2.MEMBER_STATUS_PAID,
    )
    finalized = await stack.stub().ForceFinalize(
        gs.ForceFinalizeRequest(group_id=group.group_id), metadata=user_md(group.host_user_id)
    )
    host, _, covered = finalized.group.members
    assert covered.status == group_pb2.MEMBER_STATUS_COVERED_BY_HOST
    assert host.share.amount_minor == 600
    await assert_link_refused(real, unpaid)
    assert (await real.payment(paid.payment_id)).status == payment_pb2.PAYMENT_STATUS_AUTHORIZED
    # at the deadline: as soon as the host's fallback shows, the old links refuse payment
    late = await open_group(
        stack, create_request(total=900, guests=2, deadline_in=3.0, policy=HOST_PAYS)
    )
    await eventually(
        lambda: get_group(stack, late),
        lambda g: g.members[2].status == group_pb2.MEMBER_STATUS_COVERED_BY_HOST,
        within=20,
    )
    for member in late.members[1:]:
        await assert_link_refused(real, member)


async def test_a_cancelled_group_s_links_refuse_payment_at_once(real: RealStack) -> None:
    stack = real.group
    group = await open_group(stack, create_request(total=900, guests=2))
    cancelled = await stack.stub().CancelGroup(
        gs.CancelGroupRequest(group_id=group.group_id), metadata=user_md(group.host_user_id)
    )
    assert cancelled.group.status == group_pb2.GROUP_STATUS_CANCELLED
    for member in group.members:
        await assert_link_refused(real, member)


async def test_a_cart_the_merchant_prices_differently_never_becomes_a_group(
    real: RealStack,
) -> None:
    stub = real.group.stub()
    host = f"host-quote-{uuid.uuid4().hex[:6]}"
    cheap = create_request(total=1200, guests=1)
    cheap.items[0].unit_price_minor = 1  # a 1-cent pizza
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateGroup(cheap, metadata=user_md(host))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(refused.value) == {"items[0].unit_price_minor"}
    # the merchant cannot be asked: UNAVAILABLE, nothing stored; the same key works later
    await real.merchant.control("faults", {"action": "catalogue", "fault": "error", "times": -1})
    request = create_request(total=1200, guests=1)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await stub.CreateGroup(request, metadata=user_md(host, key="create-quoted"))
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        listed = await stub.ListGroups(gs.ListGroupsRequest(), metadata=user_md(host))
        assert list(listed.groups) == []
    finally:
        await real.merchant.control("reset", {})
    created = await stub.CreateGroup(request, metadata=user_md(host, key="create-quoted"))
    again = await stub.CreateGroup(request, metadata=user_md(host, key="create-quoted"))
    assert again.group.group_id == created.group.group_id
    assert created.group.total.amount_minor == 1200
    listed = await stub.ListGroups(gs.ListGroupsRequest(), metadata=user_md(host))
    assert [g.group_id for g in listed.groups] == [created.group.group_id]
