"""ISO 4217 minor-unit exponents and exact conversion between minor units and decimal strings.

Money is kept as an integer count of minor units plus a currency code. Providers that want a
decimal string (PayPal: "10.50", "1050" for JPY, "1.050" for KWD) get one from
`to_decimal_string`; `from_decimal_string` reads such a string back. Both are exact: no floats.
A code that is not three upper-case letters is rejected; codes not listed below use the common
exponent 2.
"""

from __future__ import annotations

import re

from mppo.platform.errors import FieldViolation, InvalidArgumentError

#: currencies whose minor unit is not 1/100 of the major unit (ISO 4217 list one)
_EXPONENTS: dict[str, int] = {
    # no minor unit
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # thousandths
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # ten-thousandths (units of account)
    "CLF": 4,
    "UYW": 4,
}
_DEFAULT_EXPONENT = 2
_CODE = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"(?P<whole>\d+)(?:\.(?P<frac>\d+))?")


def _checked(currency_code: str) -> str:
    if not _CODE.fullmatch(currency_code):
        raise InvalidArgumentError(
            "currency code must be three upper-case letters (ISO 4217)",
            [FieldViolation("currency_code", f"not an ISO 4217 code: {currency_code!r}")],
        )
    return currency_code


def minor_unit_exponent(currency_code: str) -> int:
    """How many decimal places the currency's minor unit has (JPY 0, USD 2, KWD 3)."""
    return _EXPONENTS.get(_checked(currency_code), _DEFAULT_EXPONENT)


def to_decimal_string(amount_minor: int, currency_code: str) -> str:
    """`1050, "USD"` → `"10.50"`; `1050, "JPY"` → `"1050"`; `1050, "KWD"` → `"1.050"`."""
    if amount_minor < 0:
        raise InvalidArgumentError(
            "amount must not be negative",
            [FieldViolation("amount_minor", f"negative amount: {amount_minor}")],
        )
    exponent = minor_unit_exponent(currency_code)
    if exponent == 0:
        return str(amount_minor)
    whole, frac = divmod(amount_minor, 10**exponent)
    return f"{whole}.{frac:0{exponent}d}"


def from_decimal_string(value: str, currency_code: str) -> int:
    """`"10.50", "USD"` → `1050`; fewer decimals are fine (`"10.5"`), more are an error."""
    exponent = minor_unit_exponent(currency_code)
    match = _DECIMAL.fullmatch(value)
    if match is None:
        raise InvalidArgumentError(
            "amount must be a non-negative decimal number",
            [FieldViolation("value", f"not a decimal amount: {value!r}")],
        )
    frac = match.group("frac") or ""
    if len(frac) > exponent:
        raise InvalidArgumentError(
            f"{currency_code} has {exponent} decimal places",
            [FieldViolation("value", f"too many decimal places: {value!r}")],
        )
    scale: int = 10**exponent
    return int(match.group("whole")) * scale + int(frac.ljust(exponent, "0") or "0")
