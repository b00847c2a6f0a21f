"""Minor units ↔ decimal strings (mppo.platform.money, as the PayPal adapter uses them): exact
for exponent 0, 2 and 3, and strict about input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mppo.platform.errors import InvalidArgumentError
from mppo.platform.money import exponent as minor_unit_exponent
from mppo.platform.money import from_decimal_string, to_decimal_string

amounts = st.integers(min_value=0, max_value=10**15)


@pytest.mark.parametrize(
    ("code", "exponent"), [("JPY", 0), ("KRW", 0), ("USD", 2), ("INR", 2), ("KWD", 3), ("BHD", 3)]
)
def test_exponents(code: str, exponent: int) -> None:
    assert minor_unit_exponent(code) == exponent


@pytest.mark.parametrize(
    ("amount", "code", "text"),
    [
        (1050, "USD", "10.50"),
        (5, "USD", "0.05"),
        (0, "EUR", "0.00"),
        (1050, "JPY", "1050"),
        (1050, "KWD", "1.050"),
        (7, "KWD", "0.007"),
        (100000, "INR", "1000.00"),
    ],
)
def test_known_values(amount: int, code: str, text: str) -> None:
    assert to_decimal_string(amount, code) == text
    assert from_decimal_string(text, code) == amount


@given(amounts, st.sampled_from(["JPY", "USD", "EUR", "KWD", "OMR", "VND"]))
def test_round_trip(amount: int, code: str) -> None:
    text = to_decimal_string(amount, code)
    assert from_decimal_string(text, code) == amount
    exponent = minor_unit_exponent(code)
    assert ("." in text) == (exponent > 0)
    if exponent:
        assert len(text.split(".")[1]) == exponent


@given(amounts, st.sampled_from(["USD", "KWD"]))
def test_shorter_fractions_read_the_same(amount: int, code: str) -> None:
    text = to_decimal_string(amount, code)
    trimmed = text.rstrip("0").rstrip(".") if "." in text else text
    assert from_decimal_string(trimmed, code) == amount


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("10.505", "USD"),
        ("1.5", "JPY"),
        ("-1.00", "USD"),
        ("1e3", "USD"),
        ("", "USD"),
        (" 1.00", "USD"),
        ("1,00", "EUR"),
        ("1.0000", "KWD"),
    ],
)
def test_rejects_malformed_or_too_precise(text: str, code: str) -> None:
    with pytest.raises(InvalidArgumentError):
        from_decimal_string(text, code)


@pytest.mark.parametrize("code", ["usd", "US", "USDX", "", "12A"])
def test_rejects_bad_codes(code: str) -> None:
    with pytest.raises(InvalidArgumentError):
        minor_unit_exponent(code)


def test_rejects_negative_amounts() -> None:
    with pytest.raises(InvalidArgumentError):
        to_decimal_string(-1, "USD")
