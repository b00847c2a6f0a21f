"""The placement saga against fakes (unit of work, merchant, payment service): the money
invariants without Postgres — one merchant order per confirmed group, captured == the order's
total, nothing held or kept when the order fails — and the events that reach the outbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from mppo.order.v1 import order_pb2
from order_svc.domain.model import FailureReason, Line, Order, OrderStatus, Share, ShareStatus
from order_svc.domain.validator import CatalogueItem
from order_svc.service_layer.runner import SagaRunner
from order_svc.service_layer.saga import OrderSaga, SagaSettings
from tests.unit.order.fakes import (
    FakeCache,
    FakeLocks,
    FakeMerchant,
    FakePayments,
    FakeUnitOfWork,
    OneMerchant,
)

PIZZA = CatalogueItem("PIZZA", "Pizza", 1200, "USD", 10)
TRUFFLE = CatalogueItem("TRUFFLE", "Truffle", 3200, "USD", 1)
SETTINGS = SagaSettings(lease_seconds=5, max_forward_attempts=3)


class Stack:
    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        self.merchant = FakeMerchant(catalogue_items={"PIZZA": PIZZA, "TRUFFLE": TRUFFLE})
        self.payments = FakePayments()
        self.cache = FakeCache()
        self.locks = FakeLocks()
        self.saga = OrderSaga(
            self.uow,
            OneMerchant(self.merchant),
            self.payments,
            self.locks,
            self.cache,
            SETTINGS,
        )

    async def order(
        self, sku: str, quantity: int, members: int, prefix: str = "", **declines: bool
    ) -> Order:
        """A stored CREATED order whose `members` shares (`<prefix>p0`, …) are authorized."""
        item = self.merchant.catalogue_items[sku]
        total = item.unit_price_minor * quantity
        amounts = [total // members] * members
        amounts[0] += total - sum(amounts)
        shares = []
        for index, amount in enumerate(amounts):
            pid = f"{prefix}p{index}"
            self.payments.authorize(pid, amount, decline_capture=declines.get(pid, False))
            shares.append(Share(f"m{index}", pid, amount))
        order = Order.create(
            order_id=str(uuid.uuid4()),
            group_id=str(uuid.uuid4()),
            merchant_id="sandbox",
            currency="USD",
            total_minor=total,
            fees_minor=0,
            tax_minor=0,
            tip_minor=0,
            lines=[Line("l1", sku, item.name, quantity, item.unit_price_minor)],
            shares=shares,
        )
        async with self.uow:
            await self.uow.orders.add_if_absent(order)
            await self.uow.commit()
        return order

    def stored(self, order: Order) -> Order:
        return self.uow.repo.orders[order.order_id]

    def events(self, event_type: str) -> list[object]:
        return self.uow.payloads(event_type)


@pytest.fixture
def stack() -> Stack:
    return Stack()


def step_count(step: str, outcome: str) -> float:
    """How many saga steps `step` ended with `outcome` so far (this process)."""
    labels = {"step": step, "outcome": outcome}
    return REGISTRY.get_sample_value("mppo_order_saga_step_duration_seconds_count", labels) or 0.0


async def test_an_order_is_placed_once_and_every_share_captured_for_exactly_its_amount(
    stack: Stack,
) -> None:
    order = await stack.order("PIZZA", 3, members=3)
    captures = step_count("capture", "ok")
    confirmed_orders = REGISTRY.get_sample_value(
        "mppo_order_saga_finished_total", {"status": "CONFIRMED"}
    )
    await stack.saga.advance(order.order_id)

    final = stack.stored(order)
    assert final.status is OrderStatus.CONFIRMED
    # each step is timed (the three captures are one step), the finished order counted
    assert step_count("capture", "ok") == captures + 1
    assert step_count("validate", "ok") >= 1
    assert (
        REGISTRY.get_sample_value("mppo_order_saga_finished_total", {"status": "CONFIRMED"})
        == (confirmed_orders or 0) + 1
    )
    assert stack.merchant.keys("place") == [f"{order.order_id}:place"]
    assert stack.merchant.keys("reserve") == [f"{order.order_id}:reserve"]
    assert sorted(stack.payments.done("capture")) == ["p0", "p1", "p2"]
    assert sum(stack.payments.kept(pid) for pid in ("p0", "p1", "p2")) == order.total_minor
    assert [s.step for s in final.steps] == [
        "validate",
        "reserve",
        "place",
        "capture",
        "capture",
        "capture",
        "confirm",
    ]
    assert stack.uow.published_types() == ["order.created", "order.confirmed"]
    (confirmed,) = stack.events("order.confirmed")
    assert confirmed.merchant_order_id == f"mo-{order.order_id}"  # type: ignore[attr-defined]
    assert list(confirmed.payment_ids) == ["p0", "p1", "p2"]  # type: ignore[attr-defined]
    assert order.order_id in stack.cache.items  # finished: served from the cache
    assert order.order_id not in stack.uow.repo.leased
    assert stack.locks.held == set()

    await stack.saga.advance(order.order_id)  # a finished order is left alone
    assert stack.merchant.keys("place") == [f"{order.order_id}:place"]
    assert len(stack.payments.done("capture")) == 3


async def test_out_of_stock_fails_before_the_merchant_and_voids_every_hold(
    stack: Stack,
) -> None:
    order = await stack.order("TRUFFLE", 2, members=2)
    await stack.saga.advance(order.order_id)

    final = stack.stored(order)
    assert final.status is OrderStatus.FAILED
    assert final.failure_reason is FailureReason.OUT_OF_STOCK
    assert stack.merchant.calls == []
    assert stack.payments.done("capture") == []
    assert sorted(stack.payments.done("void")) == ["p0", "p1"]
    assert all(stack.payments.held(p) == 0 and stack.payments.kept(p) == 0 for p in ("p0", "p1"))
    assert all(s.status is ShareStatus.VOIDED for s in final.shares)
    (failed,) = stack.events("order.failed")
    assert failed.reason == order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK  # type: ignore[attr-defined]
    assert stack.events("order.confirmed") == []


async def test_a_declined_capture_cancels_the_merchant_order_then_refunds_the_rest(
    stack: Stack,
) -> None:
    order = await stack.order("PIZZA", 3, members=3, p2=True)
    await stack.saga.advance(order.order_id)

    final = stack.stored(order)
    assert final.status is OrderStatus.FAILED
    assert final.failure_reason is FailureReason.CAPTURE_FAILED
    assert sorted(stack.payments.done("refund")) == ["p0", "p1"]
    assert all(stack.payments.kept(p) == 0 for p in ("p0", "p1", "p2"))
    assert all(stack.payments.held(p) == 0 for p in ("p0", "p1", "p2"))
    assert stack.merchant.orders[order.order_id] == "cancelled"
    ok = [s.step for s in final.steps if s.outcome == "ok"]
    assert ok.index("cancel_merchant_order") < ok.index("refund")  # merchant first
    assert stack.uow.published_types() == ["order.created", "order.failed"]


async def test_a_payment_outage_is_retried_with_the_same_keys_and_captures_once(
    stack: Stack,
) -> None:
    order = await stack.order("PIZZA", 2, members=2)
    stack.payments.unavailable = 1  # the first capture call fails transiently
    await stack.saga.advance(order.order_id)

    waiting = stack.stored(order)
    assert waiting.status is OrderStatus.PLACED
    assert [oid for oid, _ in stack.uow.repo.retries] == [order.order_id]
    assert ("capture", "retry") in [(s.step, s.outcome) for s in waiting.steps]

    await stack.saga.advance(order.order_id)  # the runner picks it up again
    assert stack.stored(order).status is OrderStatus.CONFIRMED
    assert sorted(stack.payments.done("capture")) == ["p0", "p1"]  # once each
    assert sum(stack.payments.kept(p) for p in ("p0", "p1")) == order.total_minor
    assert stack.merchant.keys("place") == [f"{order.order_id}:place"]
    assert stack.uow.published_types().count("order.confirmed") == 1


async def test_a_merchant_that_stays_down_fails_the_order_and_releases_every_hold(
    stack: Stack,
) -> None:
    order = await stack.order("PIZZA", 1, members=1)
    stack.merchant.unavailable["catalogue"] = 100
    for _ in range(SETTINGS.max_forward_attempts):
        await stack.saga.advance(order.order_id)

    final = stack.stored(order)
    assert final.status is OrderStatus.FAILED
    assert final.failure_reason is FailureReason.MERCHANT_UNAVAILABLE
    assert stack.payments.done("void") == ["p0"]
    assert stack.payments.done("capture") == []
    assert stack.uow.published_types() == ["order.created", "order.failed"]


async def test_an_order_another_replica_is_advancing_is_left_alone(stack: Stack) -> None:
    order = await stack.order("PIZZA", 1, members=1)
    stack.locks.held.add(order.order_id)
    await stack.saga.advance(order.order_id)
    assert stack.stored(order).status is OrderStatus.CREATED
    assert stack.merchant.calls == []


async def test_the_runner_leases_each_due_order_once_and_drives_it_to_the_end(
    stack: Stack,
) -> None:
    orders = [await stack.order("PIZZA", 1, members=1, prefix=f"o{n}") for n in range(3)]
    runner = SagaRunner(stack.uow, stack.saga, SETTINGS, batch=2)
    assert await runner.work() is True  # a full batch: more may be due
    assert await runner.work() is False
    assert await runner.work() is False  # all three are leased: nothing else is due
    for _ in range(200):  # the advances run in their own tasks
        if all(stack.stored(o).status is OrderStatus.CONFIRMED for o in orders):
            break
        await asyncio.sleep(0)
    await runner.closing()
    assert all(stack.stored(o).status is OrderStatus.CONFIRMED for o in orders)
    assert await runner.work() is False  # finished orders are never leased again
    assert sorted(stack.merchant.keys("place")) == sorted(f"{o.order_id}:place" for o in orders)
    assert sorted(stack.payments.done("capture")) == ["o0p0", "o1p0", "o2p0"]
