"""ISO 4217 minor-unit exponents of the currencies the group service accepts.

Kept here (not shared with the payment service) so the group domain stays self-contained;
amounts are always integers in the currency's minor unit.
"""

from __future__ import annotations

from collections.abc import Mapping

from mppo.platform.errors import FieldViolation, InvalidArgumentError

#: ISO 4217 alphabetic code → number of decimal places of its minor unit.
EXPONENTS: Mapping[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "INR": 2,
    "CAD": 2,
    "AUD": 2,
    "CHF": 2,
    "SGD": 2,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "BHD": 3,
    "OMR": 3,
}


def exponent(code: str, field: str = "currency_code") -> int:
    """The minor-unit exponent of `code`; INVALID_ARGUMENT for an unsupported code."""
    try:
        return EXPONENTS[code]
    except KeyError:
        raise InvalidArgumentError(
            f"unsupported currency {code!r}",
            [FieldViolation(field, f"one of {', '.join(sorted(EXPONENTS))}")],
        ) from None


def format_minor(amount_minor: int, code: str) -> str:
    """Human-readable amount (`12.34 USD`) for descriptions; never used for arithmetic."""
    places = EXPONENTS.get(code, 2)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**places)
    return f"{sign}{whole}.{frac:0{places}d} {code}" if places else f"{sign}{whole} {code}"
