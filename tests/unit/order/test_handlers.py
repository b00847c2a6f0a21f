"""The order handlers against a fake unit of work: creating the group's order once (from
CreateOrder or group.finalized), the outbox event it records, waking the saga, and reads."""

from __future__ import annotations

import uuid

import pytest

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2, order_pb2
from mppo.platform.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from mppo.platform.events import Event
from mppo.platform.identity import Caller
from order_svc.domain.model import Line, OrderStatus
from order_svc.domain.validator import CatalogueItem
from order_svc.service_layer.commands import (
    CreateOrder,
    GetOrder,
    GetOrderByGroup,
    OrderSpec,
    QuoteCart,
    ShareSpec,
)
from order_svc.service_layer.handlers import OrderHandlers
from order_svc.service_layer.messages import new_order
from tests.unit.order.fakes import (
    FakeCache,
    FakeGroups,
    FakeMerchant,
    FakeUnitOfWork,
    OneMerchant,
)

GROUP = Caller(service="group")
ALICE = Caller(user_id="alice")


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _spec(group_id: str = "", *, currency: str = "USD", share_currency: str = "USD") -> OrderSpec:
    return OrderSpec(
        group_id=group_id or str(uuid.uuid4()),
        merchant_id="sandbox",
        currency=currency,
        total_minor=2500,
        fees_minor=100,
        tax_minor=0,
        tip_minor=0,
        lines=(Line("l1", "PIZZA", "Pizza", 2, 1200),),
        shares=(
            ShareSpec("m1", "p1", 1250, currency),
            ShareSpec("m2", "p2", 1250, share_currency),
        ),
    )


def _finalized(group_id: str) -> group_events_pb2.GroupFinalized:
    usd = "USD"
    return group_events_pb2.GroupFinalized(
        group_id=group_id,
        merchant_id="sandbox",
        items=[
            cart_pb2.LineItem(line_id="l1", sku="PIZZA", name="P", quantity=1, unit_price_minor=900)
        ],
        total=money_pb2.Money(amount_minor=900, currency_code=usd),
        shares=[
            group_events_pb2.FinalizedShare(
                member_id="m1",
                payment_id="p1",
                amount=money_pb2.Money(amount_minor=900, currency_code=usd),
            )
        ],
    )


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def groups() -> FakeGroups:
    return FakeGroups()


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def merchant() -> FakeMerchant:
    return FakeMerchant(
        catalogue_items={
            "PIZZA": CatalogueItem("PIZZA", "Pizza", 1200, "USD", 10),
            "SODA": CatalogueItem("SODA", "Soda", 250, "USD", 0),
            "WINE": CatalogueItem("WINE", "Wine", 2000, "EUR", 10),
        }
    )


@pytest.fixture
def handlers(
    cache: FakeCache, groups: FakeGroups, wakes: Wakes, merchant: FakeMerchant
) -> OrderHandlers:
    return OrderHandlers(cache, groups, wakes, OneMerchant(merchant))


async def test_create_order_records_the_order_and_order_created_and_wakes_the_saga(
    handlers: OrderHandlers, uow: FakeUnitOfWork, wakes: Wakes
) -> None:
    spec = _spec()
    order = await handlers.create_order(CreateOrder(GROUP, spec), uow)

    assert order.group_id == spec.group_id
    assert order.status == order_pb2.ORDER_STATUS_CREATED
    assert order.total.amount_minor == 2500
    assert [s.amount.amount_minor for s in order.shares] == [1250, 1250]
    assert uow.published_types() == ["order.created"]
    created = uow.payloads("order.created")[0]
    assert isinstance(created, order_events_pb2.OrderCreated)
    assert created.order_id == order.order_id
    assert created.total.amount_minor == 2500
    assert uow.published[0].aggregate_id == order.order_id
    assert wakes.count == 1


async def test_create_order_twice_for_a_group_returns_the_same_order_without_a_second_event(
    handlers: OrderHandlers, uow: FakeUnitOfWork, wakes: Wakes
) -> None:
    spec = _spec()
    first = await handlers.create_order(CreateOrder(GROUP, spec), uow)
    again = await handlers.create_order(CreateOrder(GROUP, spec), uow)

    assert again.order_id == first.order_id
    assert len(uow.repo.orders) == 1
    assert uow.published_types() == ["order.created"]
    assert wakes.count == 1


async def test_create_order_is_for_our_services_only(
    handlers: OrderHandlers, uow: FakeUnitOfWork, wakes: Wakes
) -> None:
    with pytest.raises(PermissionDeniedError) as denied:
        await handlers.create_order(CreateOrder(ALICE, _spec()), uow)
    assert denied.value.reason == "INTERNAL_ONLY"
    assert uow.repo.orders == {}
    assert uow.published == []
    assert wakes.count == 0


async def test_an_inconsistent_order_is_refused_naming_what_does_not_add_up(
    handlers: OrderHandlers, uow: FakeUnitOfWork
) -> None:
    spec = _spec(share_currency="EUR")
    with pytest.raises(InvalidArgumentError) as refused:
        await handlers.create_order(CreateOrder(GROUP, spec), uow)
    fields = [v.field for v in refused.value.violations]
    assert "shares[1].amount.currency_code" in fields
    assert "order" in fields  # the EUR share counts as 0: shares do not sum to the total
    missing = OrderSpec(
        group_id="",
        merchant_id="",
        currency="USD",
        total_minor=0,
        fees_minor=0,
        tax_minor=0,
        tip_minor=0,
        lines=(),
        shares=(),
    )
    with pytest.raises(InvalidArgumentError) as refused_again:
        await handlers.create_order(CreateOrder(GROUP, missing), uow)
    assert {"group_id", "merchant_id"} <= {v.field for v in refused_again.value.violations}
    assert uow.repo.orders == {}
    assert uow.published == []


async def test_group_finalized_becomes_one_order_even_when_finalized_twice(
    handlers: OrderHandlers, uow: FakeUnitOfWork, wakes: Wakes
) -> None:
    group_id = str(uuid.uuid4())
    for _ in range(2):  # a second event with another id for the same group
        async with uow:
            await handlers.group_finalized(_finalized(group_id), uow)
            await uow.commit()

    assert len(uow.repo.orders) == 1
    (order,) = uow.repo.orders.values()
    assert order.group_id == group_id
    assert order.total_minor == 900
    assert [(s.payment_id, s.amount_minor) for s in order.shares] == [("p1", 900)]
    assert uow.published_types() == ["order.created"]
    assert wakes.count == 1


async def test_group_finalized_without_a_group_is_ignored(
    handlers: OrderHandlers, uow: FakeUnitOfWork, wakes: Wakes
) -> None:
    async with uow:
        uow.event = Event.create("group.finalized", "", group_events_pb2.GroupFinalized())
        await handlers.group_finalized(group_events_pb2.GroupFinalized(), uow)
        await uow.commit()
    assert uow.repo.orders == {}
    assert uow.published == []
    assert wakes.count == 0


async def test_no_event_reaches_the_outbox_without_a_commit(
    handlers: OrderHandlers, uow: FakeUnitOfWork, wakes: Wakes
) -> None:
    async with uow:
        await handlers.group_finalized(_finalized(str(uuid.uuid4())), uow)
        # the consumer fails before committing: rolled back
    assert uow.published == []
    assert wakes.count == 0


async def test_get_order_answers_members_of_the_group_only(
    handlers: OrderHandlers, uow: FakeUnitOfWork, groups: FakeGroups
) -> None:
    created = await handlers.create_order(CreateOrder(GROUP, _spec()), uow)
    groups.members[created.group_id] = {"alice"}

    mine = await handlers.get_order(GetOrder(ALICE, created.order_id), uow)
    assert mine.order_id == created.order_id
    with pytest.raises(NotFoundError):
        await handlers.get_order(GetOrder(Caller(user_id="mallory"), created.order_id), uow)
    with pytest.raises(NotFoundError):
        await handlers.get_order(GetOrder(ALICE, str(uuid.uuid4())), uow)
    with pytest.raises(InvalidArgumentError):
        await handlers.get_order(GetOrder(ALICE, ""), uow)


async def test_get_order_by_group_checks_membership_before_looking(
    handlers: OrderHandlers, uow: FakeUnitOfWork, groups: FakeGroups
) -> None:
    created = await handlers.create_order(CreateOrder(GROUP, _spec()), uow)
    groups.members[created.group_id] = {"alice"}

    found = await handlers.get_order_by_group(GetOrderByGroup(ALICE, created.group_id), uow)
    assert found.order_id == created.order_id
    groups.asked.clear()
    with pytest.raises(NotFoundError):
        await handlers.get_order_by_group(
            GetOrderByGroup(Caller(user_id="mallory"), created.group_id), uow
        )
    assert groups.asked == [(Caller(user_id="mallory"), created.group_id)]
    other = str(uuid.uuid4())
    groups.members[other] = {"alice"}
    with pytest.raises(NotFoundError) as none:
        await handlers.get_order_by_group(GetOrderByGroup(ALICE, other), uow)
    assert none.value.reason == "ORDER_NOT_FOUND"
    with pytest.raises(InvalidArgumentError):
        await handlers.get_order_by_group(GetOrderByGroup(ALICE, ""), uow)


async def test_finished_orders_are_served_from_the_cache(
    handlers: OrderHandlers, uow: FakeUnitOfWork, cache: FakeCache
) -> None:
    order = new_order(_spec())
    order.events.clear()
    await uow.repo.add_if_absent(order)
    stored = uow.repo.orders[order.order_id]
    read = await handlers.get_order(GetOrder(GROUP, order.order_id), uow)
    assert order.order_id not in cache.items  # unfinished orders are never cached
    assert read.status == order_pb2.ORDER_STATUS_CREATED

    stored.status = OrderStatus.FAILED
    await handlers.get_order(GetOrder(GROUP, order.order_id), uow)
    assert order.order_id in cache.items
    del uow.repo.orders[order.order_id]  # the cache answers without the database
    cached = await handlers.get_order(GetOrder(GROUP, order.order_id), uow)
    assert cached.status == order_pb2.ORDER_STATUS_FAILED


# ---- QuoteCart -----------------------------------------------------------------------------


def _quote(*lines: tuple[str, int, int], caller: Caller = GROUP) -> QuoteCart:
    return QuoteCart(
        caller,
        "sandbox",
        "USD",
        tuple(Line(f"l{i}", sku, sku, qty, price) for i, (sku, qty, price) in enumerate(lines)),
    )


async def test_quote_cart_accepts_catalogue_prices_and_names_every_line_that_differs(
    handlers: OrderHandlers, uow: FakeUnitOfWork
) -> None:
    fine = _quote(("PIZZA", 2, 1200), ("SODA", 5, 250))  # stock is checked at placement
    assert await handlers.quote_cart(fine, uow) == fine.lines
    with pytest.raises(InvalidArgumentError) as err:
        await handlers.quote_cart(
            _quote(("PIZZA", 1, 1), ("SODA", 1, 250), ("GHOST", 1, 100), ("WINE", 1, 2000)), uow
        )
    assert err.value.reason == "CATALOGUE_MISMATCH"
    assert [v.field for v in err.value.violations] == [
        "items[0].unit_price_minor",
        "items[2].sku",
        "items[3].unit_price_minor",
    ]
    assert uow.published == []


async def test_quote_cart_is_for_our_services_and_needs_the_merchant(
    handlers: OrderHandlers, uow: FakeUnitOfWork, merchant: FakeMerchant
) -> None:
    with pytest.raises(PermissionDeniedError):
        await handlers.quote_cart(_quote(("PIZZA", 1, 1200), caller=ALICE), uow)
    merchant.unavailable["catalogue"] = 1
    with pytest.raises(UnavailableError):
        await handlers.quote_cart(_quote(("PIZZA", 1, 1200)), uow)
    with pytest.raises(InvalidArgumentError):
        await handlers.quote_cart(_quote(), uow)
