"""The order validator and its explicit price-change policy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from order_svc.domain.model import FailureReason, Line, Share
from order_svc.domain.validator import (
    CatalogueItem,
    check_against_catalogue,
    check_consistency,
)

CATALOGUE = {
    "A": CatalogueItem("A", "a", 1000, "USD", 5),
    "B": CatalogueItem("B", "b", 250, "USD", 1),
    "E": CatalogueItem("E", "e", 900, "EUR", 10),
}


def test_matching_order_passes() -> None:
    assert check_against_catalogue([Line("1", "A", "a", 5, 1000)], "USD", CATALOGUE) is None


def test_unknown_item() -> None:
    rejection = check_against_catalogue([Line("1", "Z", "z", 1, 1)], "USD", CATALOGUE)
    assert rejection is not None
    assert rejection.reason is FailureReason.UNKNOWN_ITEM


def test_price_change_either_way_is_rejected() -> None:
    for price in (999, 1001):
        rejection = check_against_catalogue([Line("1", "A", "a", 1, price)], "USD", CATALOGUE)
        assert rejection is not None
        assert rejection.reason is FailureReason.PRICE_MISMATCH


def test_currency_change_is_a_price_mismatch() -> None:
    rejection = check_against_catalogue([Line("1", "E", "e", 1, 900)], "USD", CATALOGUE)
    assert rejection is not None
    assert rejection.reason is FailureReason.PRICE_MISMATCH


def test_stock_is_summed_over_lines_of_one_sku() -> None:
    lines = [Line("1", "B", "b", 1, 250), Line("2", "B", "b", 1, 250)]
    rejection = check_against_catalogue(lines, "USD", CATALOGUE)
    assert rejection is not None
    assert rejection.reason is FailureReason.OUT_OF_STOCK


def _consistency(lines: list[Line], shares: list[Share], total: int, fees: int = 0) -> list[str]:
    return check_consistency(
        lines, shares, currency="USD", total_minor=total, fees_minor=fees, tax_minor=0, tip_minor=0
    )


def test_totals_and_shares_must_add_up() -> None:
    lines = [Line("1", "A", "a", 2, 1000)]
    assert _consistency(lines, [Share("m", "p1", 2100)], 2100, fees=100) == []
    assert _consistency(lines, [Share("m", "p1", 2000)], 2100, fees=100) != []
    assert _consistency(lines, [Share("m", "p1", 2100)], 2000) != []
    assert _consistency(lines, [Share("m", "p", 1000), Share("n", "p", 1000)], 2000) != []
    assert _consistency([], [Share("m", "p", 0)], 0) != []


@given(
    st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=8), st.integers(-3, 3)
)
def test_shares_summing_to_the_total_is_exactly_what_passes(amounts: list[int], delta: int) -> None:
    total = sum(amounts)
    lines = [Line("1", "A", "a", 1, total)]
    shares = [Share(f"m{i}", f"p{i}", a) for i, a in enumerate(amounts)]
    problems = _consistency(lines, shares, total + delta)
    assert (problems == []) == (delta == 0)
