"""The sandbox merchant's rules: stock taken at reservation, returned by cancellation."""

from __future__ import annotations

from pathlib import Path

from order_svc.sandbox_merchant.catalogue import load_catalogue
from order_svc.sandbox_merchant.state import MerchantState


def _reserve(state: MerchantState, reference: str, qty: int, price: int = 3200) -> tuple[int, dict]:  # type: ignore[type-arg]
    return state.reserve(
        {
            "reference": reference,
            "currency": "USD",
            "items": [{"sku": "TRUFFLE-SPECIAL", "quantity": qty, "unit_price_minor": price}],
        }
    )


def test_reserve_place_cancel_accounting() -> None:
    state = MerchantState(catalogue=load_catalogue(None))
    assert _reserve(state, "o1", 2)[1]["error"] == "OUT_OF_STOCK"
    assert _reserve(state, "o1", 1, price=1)[1]["error"] == "PRICE_MISMATCH"
    status, reservation = _reserve(state, "o1", 1)
    assert status == 201
    assert state.catalogue["TRUFFLE-SPECIAL"]["stock"] == 0
    assert _reserve(state, "o1", 1)[1] == reservation  # one hold per reference
    assert _reserve(state, "o2", 1)[1]["error"] == "OUT_OF_STOCK"
    status, order = state.place(
        {"reference": "o1", "reservation_id": reservation["reservation_id"]}
    )
    assert status == 201
    again = state.place({"reference": "o1", "reservation_id": reservation["reservation_id"]})
    assert again == (200, order)
    assert state.cancel({"reference": "o1"}) == (200, {"reference": "o1", "result": "cancelled"})
    assert state.catalogue["TRUFFLE-SPECIAL"]["stock"] == 1
    assert state.cancel({"reference": "o1"})[1]["result"] == "nothing"


def test_release_without_order_and_faults(tmp_path: Path) -> None:
    state = MerchantState(catalogue=load_catalogue(None))
    _reserve(state, "o3", 1)
    assert state.cancel({"reference": "o3"})[1]["result"] == "released"
    state.faults.append({"action": "place", "fault": "reject", "remaining": 1, "reference": ""})
    assert state.take_fault("reserve", "x") is None
    assert state.take_fault("place", "x") is not None
    assert state.take_fault("place", "x") is None
    path = tmp_path / "s.json"
    state.save(path)
    assert MerchantState.load(path, {}).reservations == state.reservations
