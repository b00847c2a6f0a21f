"""The one ISO 4217 table: which currencies exist and how many decimals their minor unit has.

Money is an integer count of minor units plus a currency code (docs/design.md §3). Every
service reads exponents here: the group service to accept a cart, the payment service to
speak decimal strings to providers (PayPal: "10.50", "1050" for JPY, "1.050" for KWD), the
notification service to write "12.34 USD" in a message. Conversions are exact (no floats).
Pure: imports nothing but the domain errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mppo.platform.errors import FieldViolation, InvalidArgumentError

_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWG"
)

#: ISO 4217 alphabetic code → number of decimal places of its minor unit
EXPONENTS: Mapping[str, int] = {
    **dict.fromkeys(_TWO.split(), 2),
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
    **dict.fromkeys(_FOUR.split(), 4),
}
_DECIMAL = re.compile(r"(?P<whole>\d+)(?:\.(?P<frac>\d+))?")


def exponent(code: str, field: str = "currency_code") -> int:
    """The minor-unit exponent of `code`; InvalidArgumentError naming `field` if unknown."""
    try:
        return EXPONENTS[code]
    except KeyError:
        raise InvalidArgumentError(
            f"unsupported currency {code[:8]!r}",
            [FieldViolation(field, "an ISO 4217 alphabetic code such as USD, EUR, JPY")],
        ) from None


def format_minor(amount_minor: int, code: str) -> str:
    """Human-readable amount (`12.34 USD`, `1,050 JPY` is written `1050 JPY`); display only."""
    places = EXPONENTS.get(code, 2)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**places)
    return f"{sign}{whole}.{frac:0{places}d} {code}" if places else f"{sign}{whole} {code}"


def to_decimal_string(amount_minor: int, code: str) -> str:
    """`1050, "USD"` → `"10.50"`; `1050, "JPY"` → `"1050"`; `1050, "KWD"` → `"1.050"`."""
    if amount_minor < 0:
        raise InvalidArgumentError(
            "amount must not be negative",
            [FieldViolation("amount_minor", f"negative amount: {amount_minor}")],
        )
    places = exponent(code)
    if places == 0:
        return str(amount_minor)
    whole, frac = divmod(amount_minor, 10**places)
    return f"{whole}.{frac:0{places}d}"


def from_decimal_string(value: str, code: str) -> int:
    """`"10.50", "USD"` → `1050`; fewer decimals are fine (`"10.5"`), more are an error."""
    places = exponent(code)
    match = _DECIMAL.fullmatch(value)
    if match is None:
        raise InvalidArgumentError(
            "amount must be a non-negative decimal number",
            [FieldViolation("value", f"not a decimal amount: {value[:32]!r}")],
        )
    frac = match.group("frac") or ""
    if len(frac) > places:
        raise InvalidArgumentError(
            f"{code} has {places} decimal places",
            [FieldViolation("value", f"too many decimal places: {value[:32]!r}")],
        )
    scale: int = 10**places
    return int(match.group("whole")) * scale + int(frac.ljust(places, "0") or "0")
