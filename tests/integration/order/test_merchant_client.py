"""The merchant integration layer over real HTTP against the real sandbox merchant process:
signing, idempotency keys, retries, timeouts and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from order_svc.adapters.merchant_http import HttpMerchantClient, RetryPolicy
from order_svc.adapters.merchant_signature import HEADER, sign
from order_svc.domain.model import FailureReason, Line
from order_svc.service_layer.ports import MerchantRefusedError, MerchantUnavailableError
from tests.support.sandbox_merchant import TEST_SECRET, MerchantProcess, start_merchant

FAST = RetryPolicy(attempts=3, timeout_seconds=0.5, backoff_seconds=0.05)
PIZZA = Line("l1", "PIZZA-MARGHERITA", "Margherita", 2, 1200)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def merchant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MerchantProcess]:
    proc = await start_merchant(tmp_path_factory.mktemp("merchant"))
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log_text()


@pytest_asyncio.fixture(loop_scope="session")
async def client(merchant: MerchantProcess) -> AsyncIterator[HttpMerchantClient]:
    await merchant.control("reset", {})
    c = HttpMerchantClient(merchant.base_url, TEST_SECRET.encode(), policy=FAST)
    try:
        yield c
    finally:
        await c.close()


async def test_catalogue_reserve_place_cancel_round_trip(
    client: HttpMerchantClient, merchant: MerchantProcess
) -> None:
    catalogue = await client.catalogue()
    assert catalogue["PIZZA-MARGHERITA"].unit_price_minor == 1200
    stock = catalogue["PIZZA-MARGHERITA"].stock
    rid = await client.reserve(reference="o1", lines=[PIZZA], currency="USD", idempotency_key="k1")
    assert (await client.catalogue())["PIZZA-MARGHERITA"].stock == stock - 2
    placed = await client.place(
        reference="o1", reservation_id=rid, total_minor=2400, currency="USD", idempotency_key="k2"
    )
    assert placed.status == "placed"
    assert await client.cancel(reference="o1", idempotency_key="k3") == "cancelled"
    assert (await client.catalogue())["PIZZA-MARGHERITA"].stock == stock
    assert [o["status"] for o in await merchant.orders_for("o1")] == ["cancelled"]


async def test_same_key_is_applied_once(
    client: HttpMerchantClient, merchant: MerchantProcess
) -> None:
    first = await client.reserve(
        reference="o2", lines=[PIZZA], currency="USD", idempotency_key="r2"
    )
    again = await client.reserve(
        reference="o2", lines=[PIZZA], currency="USD", idempotency_key="r2"
    )
    assert first == again
    assert len([r for r in (await merchant.state())["reservations"] if r["reference"] == "o2"]) == 1
    with pytest.raises(MerchantRefusedError):  # same key, other body
        await client.reserve(
            reference="o2", lines=[PIZZA, PIZZA], currency="USD", idempotency_key="r2"
        )


async def test_fail_once_and_timeout_are_retried_with_the_same_key(
    client: HttpMerchantClient, merchant: MerchantProcess
) -> None:
    await merchant.control("faults", {"action": "reserve", "fault": "error"})
    rid = await client.reserve(reference="o3", lines=[PIZZA], currency="USD", idempotency_key="r3")
    await merchant.control("faults", {"action": "place", "fault": "timeout", "delay_seconds": 1})
    placed = await client.place(
        reference="o3", reservation_id=rid, total_minor=2400, currency="USD", idempotency_key="p3"
    )
    orders = await merchant.orders_for("o3")
    assert [o["merchant_order_id"] for o in orders] == [placed.merchant_order_id]
    requests = (await merchant.state())["requests"]
    assert requests["reserve"] >= 2
    assert requests["place"] >= 2


async def test_bounded_retries_end_in_unavailable(
    client: HttpMerchantClient, merchant: MerchantProcess
) -> None:
    await merchant.control("faults", {"action": "reserve", "fault": "error", "times": 3})
    with pytest.raises(MerchantUnavailableError):
        await client.reserve(reference="o4", lines=[PIZZA], currency="USD", idempotency_key="r4")
    assert (await merchant.state())["requests"]["reserve"] == 3


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("reject", FailureReason.MERCHANT_REJECTED), ("out_of_stock", FailureReason.OUT_OF_STOCK)],
)
async def test_refusals_carry_their_reason(
    client: HttpMerchantClient, merchant: MerchantProcess, fault: str, reason: FailureReason
) -> None:
    await merchant.control("faults", {"action": "reserve", "fault": fault})
    with pytest.raises(MerchantRefusedError) as refused:
        await client.reserve(reference="o5", lines=[PIZZA], currency="USD", idempotency_key="r5")
    assert refused.value.reason is reason


async def test_price_mismatch_and_unknown_item_are_refused(client: HttpMerchantClient) -> None:
    cheap = Line("l1", "PIZZA-MARGHERITA", "Margherita", 1, 999)
    with pytest.raises(MerchantRefusedError) as refused:
        await client.reserve(reference="o6", lines=[cheap], currency="USD", idempotency_key="r6")
    assert refused.value.reason is FailureReason.PRICE_MISMATCH
    ghost = Line("l1", "NOPE", "?", 1, 100)
    with pytest.raises(MerchantRefusedError) as unknown:
        await client.reserve(reference="o7", lines=[ghost], currency="USD", idempotency_key="r7")
    assert unknown.value.reason is FailureReason.UNKNOWN_ITEM


async def test_unsigned_or_wrongly_signed_requests_are_refused(merchant: MerchantProcess) -> None:
    wrong = HttpMerchantClient(merchant.base_url, b"not-the-secret", policy=FAST)
    try:
        with pytest.raises(MerchantUnavailableError, match="credentials"):
            await wrong.catalogue()
    finally:
        await wrong.close()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{merchant.base_url}/v1/catalogue") as response:
            assert response.status == 401
        body = b'{"reference": "x"}'
        stale = sign(TEST_SECRET.encode(), "POST", "/v1/orders/cancel", body, now=1_000_000)
        headers = {HEADER: stale, "Idempotency-Key": "s1"}
        async with session.post(
            f"{merchant.base_url}/v1/orders/cancel", data=body, headers=headers
        ) as response:
            assert response.status == 401
            assert "tolerance" in (await response.json())["detail"]
        # a valid signature for another path does not authorize this one
        other = sign(TEST_SECRET.encode(), "POST", "/v1/reservations", body)
        async with session.post(
            f"{merchant.base_url}/v1/orders/cancel",
            data=body,
            headers={HEADER: other, "Idempotency-Key": "s2"},
        ) as response:
            assert response.status == 401


async def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "merchant.json"
    first = await start_merchant(tmp_path, {"MPPO_MERCHANT_STATE_FILE": str(state_file)})
    c = HttpMerchantClient(first.base_url, TEST_SECRET.encode(), policy=FAST)
    try:
        rid = await c.reserve(reference="o8", lines=[PIZZA], currency="USD", idempotency_key="r8")
        await c.place(
            reference="o8",
            reservation_id=rid,
            total_minor=2400,
            currency="USD",
            idempotency_key="p8",
        )
    finally:
        await c.close()
        first.stop()
    second = await start_merchant(tmp_path, {"MPPO_MERCHANT_STATE_FILE": str(state_file)})
    c = HttpMerchantClient(second.base_url, TEST_SECRET.encode(), policy=FAST)
    try:
        assert len(await second.orders_for("o8")) == 1
        # a replay after the restart still returns the stored answer
        again = await c.place(
            reference="o8",
            reservation_id=rid,
            total_minor=2400,
            currency="USD",
            idempotency_key="p8",
        )
        assert [o["merchant_order_id"] for o in await second.orders_for("o8")] == [
            again.merchant_order_id
        ]
    finally:
        await c.close()
        second.stop()
