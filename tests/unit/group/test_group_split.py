"""The split calculator: exact examples per mode, bad input, and properties (hypothesis)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from group_svc.domain.split import (
    Line,
    ShareSpec,
    SplitMode,
    compute_shares,
    largest_remainder,
)
from mppo.platform.errors import InvalidArgumentError
from mppo.platform.money import EXPONENTS, exponent, format_minor


def test_equal_split_of_a_total_not_divisible_gives_the_extra_units_to_the_earliest() -> None:
    assert compute_shares(SplitMode.EQUAL, 1001, [ShareSpec()] * 4) == [251, 250, 250, 250]
    assert compute_shares(SplitMode.EQUAL, 1003, [ShareSpec()] * 4) == [251, 251, 251, 250]
    assert compute_shares(SplitMode.EQUAL, 2, [ShareSpec()] * 3) == [1, 1, 0]


def test_custom_split_returns_the_amounts_and_rejects_a_wrong_sum() -> None:
    specs = [ShareSpec(amount_minor=700), ShareSpec(amount_minor=300)]
    assert compute_shares(SplitMode.CUSTOM, 1000, specs) == [700, 300]
    with pytest.raises(InvalidArgumentError) as err:
        compute_shares(SplitMode.CUSTOM, 999, specs)
    assert [v.field for v in err.value.violations] == ["shares"]
    with pytest.raises(InvalidArgumentError) as err:
        compute_shares(SplitMode.CUSTOM, 1000, [ShareSpec(amount_minor=-1), ShareSpec()])
    assert [v.field for v in err.value.violations] == [
        "shares[0].amount_minor",
        "shares[1].amount_minor",
    ]


def test_weighted_split_is_proportional_with_largest_remainder() -> None:
    specs = [ShareSpec(weight=1), ShareSpec(weight=2)]
    # 100/3 = 33.33 and 66.67: the larger fractional part (.67) gets the unit
    assert compute_shares(SplitMode.WEIGHTED, 100, specs) == [33, 67]
    with pytest.raises(InvalidArgumentError) as err:
        compute_shares(SplitMode.WEIGHTED, 100, [ShareSpec(weight=0), ShareSpec(weight=1)])
    assert err.value.violations[0].field == "shares[0].weight"


def test_percentage_split_uses_basis_points_summing_to_10000() -> None:
    specs = [
        ShareSpec(basis_points=3333),
        ShareSpec(basis_points=3333),
        ShareSpec(basis_points=3334),
    ]
    assert compute_shares(SplitMode.PERCENTAGE, 10000, specs) == [3333, 3333, 3334]
    assert sum(compute_shares(SplitMode.PERCENTAGE, 1, specs)) == 1
    with pytest.raises(InvalidArgumentError):
        compute_shares(SplitMode.PERCENTAGE, 100, [ShareSpec(basis_points=5000)] * 3)
    with pytest.raises(InvalidArgumentError):
        compute_shares(SplitMode.PERCENTAGE, 100, [ShareSpec(basis_points=10001), ShareSpec()])


def test_itemized_split_spreads_shared_lines_and_extras_in_proportion_to_spend() -> None:
    lines = [Line("a", 1000), Line("b", 3000), Line("shared", 2000)]
    specs = [
        ShareSpec(line_ids=("a", "shared")),
        ShareSpec(line_ids=("b", "shared")),
    ]
    # spend: 1000 + 1000 = 2000 and 3000 + 1000 = 4000; extras 600 spread 1:2
    assert compute_shares(SplitMode.ITEMIZED, 6600, specs, lines) == [2200, 4400]


def test_itemized_line_named_by_nobody_is_shared_by_everyone() -> None:
    lines = [Line("a", 900), Line("bread", 300)]
    specs = [ShareSpec(line_ids=("a",)), ShareSpec(), ShareSpec()]
    assert compute_shares(SplitMode.ITEMIZED, 1200, specs, lines) == [1000, 100, 100]


def test_itemized_rejects_unknown_lines() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        compute_shares(SplitMode.ITEMIZED, 100, [ShareSpec(line_ids=("zz",))], [Line("a", 100)])
    assert err.value.violations[0].field == "shares[0].line_ids"


def test_no_members_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError):
        compute_shares(SplitMode.EQUAL, 100, [])


def test_largest_remainder_rejects_impossible_input() -> None:
    with pytest.raises(ValueError, match="negative"):
        largest_remainder(-1, [1])
    with pytest.raises(ValueError, match="zero"):
        largest_remainder(10, [0, 0])
    with pytest.raises(ValueError, match="negative"):
        largest_remainder(10, [1, -1])


def test_currency_table_and_unknown_codes() -> None:
    assert {"USD", "EUR", "GBP", "INR", "JPY", "KWD", "BHD"} <= set(EXPONENTS)
    assert (exponent("JPY"), exponent("USD"), exponent("KWD"), exponent("BHD")) == (0, 2, 3, 3)
    with pytest.raises(InvalidArgumentError) as err:
        exponent("XXX")
    assert err.value.violations[0].field == "currency_code"
    assert format_minor(1050, "USD") == "10.50 USD"
    assert format_minor(1050, "JPY") == "1050 JPY"
    assert format_minor(1050, "KWD") == "1.050 KWD"


totals = st.integers(min_value=0, max_value=10**12)
member_counts = st.integers(min_value=1, max_value=50)


@settings(max_examples=300)
@given(total=totals, n=member_counts)
def test_equal_shares_sum_to_total_and_differ_by_at_most_one(total: int, n: int) -> None:
    shares = compute_shares(SplitMode.EQUAL, total, [ShareSpec()] * n)
    assert sum(shares) == total
    assert min(shares) >= 0
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)  # extra units go by join order
    assert shares == compute_shares(SplitMode.EQUAL, total, [ShareSpec()] * n)


@settings(max_examples=300)
@given(total=totals, weights=st.lists(st.integers(1, 10**6), min_size=1, max_size=50))
def test_weighted_shares_sum_exactly_and_stay_within_one_unit_of_exact(
    total: int, weights: list[int]
) -> None:
    specs = [ShareSpec(weight=w) for w in weights]
    shares = compute_shares(SplitMode.WEIGHTED, total, specs)
    assert sum(shares) == total
    assert all(s >= 0 for s in shares)
    for share, w in zip(shares, weights, strict=True):
        assert abs(Fraction(share) - Fraction(total * w, sum(weights))) < 1
    assert shares == compute_shares(SplitMode.WEIGHTED, total, specs)


@st.composite
def basis_points(draw: st.DrawFn) -> list[int]:
    n = draw(st.integers(1, 20))
    cuts = sorted(draw(st.lists(st.integers(0, 10000), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 10000]
    return [b - a for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200)
@given(total=totals, points=basis_points())
def test_percentage_shares_sum_exactly(total: int, points: list[int]) -> None:
    shares = compute_shares(
        SplitMode.PERCENTAGE, total, [ShareSpec(basis_points=p) for p in points]
    )
    assert sum(shares) == total
    assert all(s >= 0 for s in shares)


@st.composite
def itemized_cases(draw: st.DrawFn) -> tuple[int, list[Line], list[ShareSpec]]:
    lines = [Line(f"l{i}", draw(st.integers(1, 10**7))) for i in range(draw(st.integers(1, 12)))]
    n = draw(st.integers(1, 10))
    ids = [line.line_id for line in lines]
    specs = [
        ShareSpec(line_ids=tuple(draw(st.lists(st.sampled_from(ids), unique=True))))
        for _ in range(n)
    ]
    extras = draw(st.integers(0, 10**6))
    return sum(line.cost_minor for line in lines) + extras, lines, specs


@settings(max_examples=200)
@given(case=itemized_cases())
def test_itemized_shares_sum_exactly_and_cover_own_lines(
    case: tuple[int, list[Line], list[ShareSpec]],
) -> None:
    total, lines, specs = case
    shares = compute_shares(SplitMode.ITEMIZED, total, specs, lines)
    assert sum(shares) == total
    assert all(s >= 0 for s in shares)
    assert shares == compute_shares(SplitMode.ITEMIZED, total, specs, lines)
    named = {line_id for spec in specs for line_id in spec.line_ids}
    for share, spec in zip(shares, specs, strict=True):
        # a member pays at least their own unshared lines (extras only add), minus rounding
        own = sum(
            line.cost_minor
            for line in lines
            if line.line_id in spec.line_ids and sum(line.line_id in s.line_ids for s in specs) == 1
        )
        assert share >= own - 1
    if not named:
        assert max(shares) - min(shares) <= 1


@settings(max_examples=200)
@given(total=totals, amounts=st.lists(st.integers(0, 10**9), min_size=1, max_size=20))
def test_custom_shares_are_accepted_only_when_they_sum_to_the_total(
    total: int, amounts: list[int]
) -> None:
    specs = [ShareSpec(amount_minor=a) for a in amounts]
    if sum(amounts) == total:
        assert compute_shares(SplitMode.CUSTOM, total, specs) == amounts
    else:
        with pytest.raises(InvalidArgumentError):
            compute_shares(SplitMode.CUSTOM, total, specs)
    assert compute_shares(SplitMode.CUSTOM, sum(amounts), specs) == amounts
