"""The main path against real processes: intent → hosted page → signed webhook → AUTHORIZED →
CAPTURED or VOIDED on command, with the sandbox's ledger proving where the money is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
import pytest
from google.api import httpbody_pb2
from sqlalchemy import text

from mppo.common.v1.money_pb2 import Money
from mppo.payment.v1 import payment_pb2, payment_service_pb2
from mppo.platform.db import create_engine
from mppo.platform.identity import service_metadata
from payment_svc.adapters.repository import _EXPIRING
from tests.integration.payment.conftest import AS_ORDER, METADATA, PaymentStack, label_id
from tests.support.sandbox import CARD_CAPTURE_FAILS, CARD_DECLINE

T = TypeVar("T")
P = payment_pb2


async def eventually(
    check: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 15
) -> T:
    """Poll ``check`` until ``ok`` holds (bounded); the last value."""
    deadline = asyncio.get_running_loop().time() + within
    value = await check()
    while not ok(value) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        value = await check()
    assert ok(value), value
    return value


async def authorized(stack: PaymentStack, amount: int = 1250) -> payment_pb2.Payment:
    payment = await stack.create(amount)
    outcome = await stack.sandbox.pay(payment.payment_link)
    assert outcome["outcome"] == "requires_capture", outcome
    return await eventually(
        lambda: stack.get(payment.payment_id), lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED
    )


async def test_intent_is_idempotent_and_links_to_the_hosted_page(stack: PaymentStack) -> None:
    first = await stack.create(990, group_id="g-idem-1")
    again = await stack.create(990, group_id="g-idem-1")
    assert first.payment_id == again.payment_id
    assert first.payment_link == again.payment_link
    assert first.status == P.PAYMENT_STATUS_REQUIRES_ACTION
    assert first.payment_link.startswith(stack.sandbox.url + "/checkout/cs_test_")
    assert first.provider == P.PROVIDER_SANDBOX
    assert first.provider_payment_id.startswith("pi_")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stack.create(991, group_id="g-idem-1")
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await stack.stub.ListPayments(
        payment_service_pb2.ListPaymentsRequest(group_id=label_id("g-idem-1")),
        metadata=METADATA,
        timeout=10,
    )
    assert [p.payment_id for p in listed.payments] == [first.payment_id]
    assert await stack.events_of(first.payment_id) == ["payment.requested"]


async def test_payments_list_in_pages_of_page_size(stack: PaymentStack) -> None:
    made = [
        (await stack.create(100 + i, group_id="g-pages", member=f"m{i}")).payment_id
        for i in range(5)
    ]
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await stack.stub.ListPayments(
            payment_service_pb2.ListPaymentsRequest(
                group_id=label_id("g-pages"), page_size=2, page_token=token
            ),
            metadata=METADATA,
            timeout=10,
        )
        assert len(page.payments) <= 2
        seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert seen == made
    whole = await stack.stub.ListPayments(
        payment_service_pb2.ListPaymentsRequest(group_id=label_id("g-pages"), page_size=10_000),
        metadata=METADATA,
        timeout=10,
    )
    assert [p.payment_id for p in whole.payments] == made
    assert whole.next_page_token == ""
    first = await stack.stub.ListPayments(
        payment_service_pb2.ListPaymentsRequest(group_id=label_id("g-pages"), page_size=2),
        metadata=METADATA,
        timeout=10,
    )
    for group, bad in (
        ("g-pages", {"page_size": -1}),
        ("g-pages", {"page_token": "not-a-token"}),
        ("g-other", {"page_token": first.next_page_token}),  # a token continues its own group
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stack.stub.ListPayments(
                payment_service_pb2.ListPaymentsRequest(group_id=label_id(group), **bad),
                metadata=METADATA,
                timeout=10,
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


async def test_concurrent_creates_make_one_payment(stack: PaymentStack) -> None:
    results = await asyncio.gather(*(stack.create(500, group_id="g-race-1") for _ in range(8)))
    assert len({p.payment_id for p in results}) == 1
    rows = await stack.query(
        "SELECT count(*) AS n FROM payments WHERE group_id = $1", label_id("g-race-1")
    )
    assert rows[0]["n"] == 1


async def test_authorize_through_page_then_capture(stack: PaymentStack) -> None:
    payment = await authorized(stack, 2500)
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["held"] == 2500
    assert ledger["kept"] == 0
    captured = await stack.stub.CapturePayment(
        payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id),
        metadata=AS_ORDER,
        timeout=20,
    )
    assert captured.payment.status == P.PAYMENT_STATUS_CAPTURED
    assert captured.payment.amount_captured.amount_minor == 2500
    again = await stack.stub.CapturePayment(
        payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id),
        metadata=AS_ORDER,
        timeout=20,
    )
    assert again.payment.status == P.PAYMENT_STATUS_CAPTURED
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["totals"]["capture"] == 2500
    assert ledger["held"] == 0
    await eventually(
        lambda: stack.events_of(payment.payment_id),
        lambda e: e == ["payment.requested", "payment.succeeded", "payment.captured"],
    )


async def test_authorize_then_void_keeps_no_money(stack: PaymentStack) -> None:
    payment = await authorized(stack, 700)
    voided = await stack.stub.VoidPayment(
        payment_service_pb2.VoidPaymentRequest(payment_id=payment.payment_id, reason="test"),
        metadata=AS_ORDER,
        timeout=20,
    )
    assert voided.payment.status == P.PAYMENT_STATUS_VOIDED
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["held"] == 0
    assert ledger["kept"] == 0
    assert ledger["totals"]["release"] == 700
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stack.stub.CapturePayment(
            payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id),
            metadata=AS_ORDER,
            timeout=20,
        )
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_partial_and_full_refunds(stack: PaymentStack) -> None:
    payment = await authorized(stack, 1000)
    await stack.stub.CapturePayment(
        payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id),
        metadata=AS_ORDER,
        timeout=20,
    )
    part = await stack.stub.RefundPayment(
        payment_service_pb2.RefundPaymentRequest(
            payment_id=payment.payment_id, amount=Money(amount_minor=300, currency_code="USD")
        ),
        metadata=(*AS_ORDER, ("idempotency-key", "refund-1")),
        timeout=20,
    )
    assert part.payment.status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED
    replay = await stack.stub.RefundPayment(
        payment_service_pb2.RefundPaymentRequest(
            payment_id=payment.payment_id, amount=Money(amount_minor=300, currency_code="USD")
        ),
        metadata=(*AS_ORDER, ("idempotency-key", "refund-1")),
        timeout=20,
    )
    assert replay.payment.amount_refunded.amount_minor == 300
    rest = await stack.stub.RefundPayment(
        payment_service_pb2.RefundPaymentRequest(payment_id=payment.payment_id),
        metadata=AS_ORDER,
        timeout=20,
    )
    assert rest.payment.status == P.PAYMENT_STATUS_REFUNDED
    assert rest.payment.amount_refunded.amount_minor == 1000
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["kept"] == 0
    assert ledger["totals"]["refund"] == 1000


async def test_declined_card_fails_the_payment(stack: PaymentStack) -> None:
    payment = await stack.create(400)
    outcome = await stack.sandbox.pay(payment.payment_link, CARD_DECLINE)
    assert outcome["outcome"] == "declined"
    failed = await eventually(
        lambda: stack.get(payment.payment_id), lambda p: p.status == P.PAYMENT_STATUS_FAILED
    )
    assert failed.failure_reason == "card_declined"
    await eventually(
        lambda: stack.events_of(payment.payment_id),
        lambda e: e == ["payment.requested", "payment.failed"],
    )


async def test_capture_declined_leaves_the_hold_to_void(stack: PaymentStack) -> None:
    payment = await stack.create(600)
    await stack.sandbox.pay(payment.payment_link, CARD_CAPTURE_FAILS)
    await eventually(
        lambda: stack.get(payment.payment_id), lambda p: p.status == P.PAYMENT_STATUS_AUTHORIZED
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stack.stub.CapturePayment(
            payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id),
            metadata=AS_ORDER,
            timeout=20,
        )
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_AUTHORIZED
    await stack.stub.VoidPayment(
        payment_service_pb2.VoidPaymentRequest(payment_id=payment.payment_id),
        metadata=AS_ORDER,
        timeout=20,
    )
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["held"] == 0
    assert ledger["kept"] == 0


async def test_money_moving_rpcs_refuse_end_users(stack: PaymentStack) -> None:
    """Capture, void, refund, sync and intents are for our services only (defence in depth
    behind the gateway, which exposes none of them to end users)."""
    payment = await authorized(stack, 900)
    user = (("x-mppo-user-id", "mallory"),)
    calls: list[Awaitable[object]] = [
        stack.stub.CapturePayment(
            payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id),
            metadata=user,
            timeout=20,
        ),
        stack.stub.VoidPayment(
            payment_service_pb2.VoidPaymentRequest(payment_id=payment.payment_id),
            metadata=user,
            timeout=20,
        ),
        stack.stub.RefundPayment(
            payment_service_pb2.RefundPaymentRequest(payment_id=payment.payment_id),
            metadata=user,
            timeout=20,
        ),
        stack.stub.SyncPayment(
            payment_service_pb2.SyncPaymentRequest(payment_id=payment.payment_id),
            metadata=user,
            timeout=20,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await stack.get(payment.payment_id)).status == P.PAYMENT_STATUS_AUTHORIZED
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["held"] == 900


async def test_service_only_methods_admit_only_the_services_that_call_them(
    stack: PaymentStack,
) -> None:
    """payment_svc.bootstrap.SERVICE_ONLY, enforced before any handler runs: intents are the
    group service's, captures the order service's, webhooks come through the gateway."""
    payment = await authorized(stack, 800)
    as_ = service_metadata
    intent = payment_service_pb2.CreatePaymentIntentRequest(
        group_id=label_id("g-only-1"),
        member_id=label_id("m1"),
        attempt=1,
        amount=Money(amount_minor=100, currency_code="USD"),
    )
    capture = payment_service_pb2.CapturePaymentRequest(payment_id=payment.payment_id)
    void = payment_service_pb2.VoidPaymentRequest(payment_id=payment.payment_id)
    refund = payment_service_pb2.RefundPaymentRequest(payment_id=payment.payment_id)
    sync = payment_service_pb2.SyncPaymentRequest(payment_id=payment.payment_id)
    webhook = payment_service_pb2.HandleWebhookRequest(
        provider="sandbox", body=httpbody_pb2.HttpBody(data=b"{}")
    )
    refusals: list[tuple[str, Awaitable[object]]] = [
        ("intent as order", stack.stub.CreatePaymentIntent(intent, metadata=as_("order"))),
        ("intent as tests", stack.stub.CreatePaymentIntent(intent, metadata=as_("tests"))),
        ("capture as group", stack.stub.CapturePayment(capture, metadata=as_("group"))),
        ("capture as gateway", stack.stub.CapturePayment(capture, metadata=as_("gateway"))),
        ("void as notification", stack.stub.VoidPayment(void, metadata=as_("notification"))),
        ("refund as gateway", stack.stub.RefundPayment(refund, metadata=as_("gateway"))),
        ("sync as tests", stack.stub.SyncPayment(sync, metadata=as_("tests"))),
        ("webhook as tests", stack.stub.HandleWebhook(webhook, metadata=as_("tests"))),
        ("webhook as order", stack.stub.HandleWebhook(webhook, metadata=as_("order"))),
    ]
    for name, call in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
    assert not await stack.query("SELECT 1 FROM payments WHERE group_id = $1", label_id("g-only-1"))
    ledger = await stack.sandbox.ledger(payment_intent=payment.provider_payment_id)
    assert ledger["held"] == 800
    synced = await stack.stub.SyncPayment(sync, metadata=as_("order"), timeout=20)
    assert synced.payment.status == P.PAYMENT_STATUS_AUTHORIZED
    voided = await stack.stub.VoidPayment(void, metadata=as_("group"), timeout=20)
    assert voided.payment.status == P.PAYMENT_STATUS_VOIDED


async def test_the_hold_lapse_scan_reads_its_index(stack: PaymentStack) -> None:
    # the reconciler's scan, exactly as the repository sends it, planned as a prepared
    # statement is after a few runs (generic plan); with sequential scans priced out, Postgres
    # must have an index that answers it (a big payments table would pick it anyway; this one
    # is small)
    engine = create_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET enable_seqscan = off"))
            await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
            statement = _EXPIRING.compile(dialect=engine.dialect)
            values = {"before": datetime.now(UTC) + timedelta(hours=1), "limit": 100}
            plan = await conn.exec_driver_sql(
                "EXPLAIN " + str(statement),
                tuple(values[name] for name in statement.positiontup or ()),
            )
            lines = [str(row[0]) for row in plan]
    finally:
        await engine.dispose()
    assert any("ix_payments_hold_lapse" in line for line in lines), "\n".join(lines)
