"""The order validator: is the finalized group consistent, and does the merchant's catalogue
agree with it? The same catalogue check prices a cart before its group exists
(:func:`quote_problems`, for QuoteCart), so a cart the merchant would refuse on price is
refused before anyone is asked to pay.

Price-change policy (explicit): the shares were authorized for the prices the group saw, so an
order whose unit price differs from the catalogue in either direction is rejected with
PRICE_MISMATCH; we never re-price silently, capture more than was authorized, or absorb the
difference. The same applies to a catalogue in another currency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from order_svc.domain.model import FailureReason, Line, Share


@dataclass(frozen=True)
class CatalogueItem:
    """One SKU as the merchant sells it now."""

    sku: str
    name: str
    unit_price_minor: int
    currency: str
    stock: int


@dataclass(frozen=True)
class LineProblem:
    """Why the catalogue does not price one cart line as the cart does."""

    #: the line's position in the cart
    index: int
    #: the line's field at fault: "sku" or "unit_price_minor"
    field: str
    detail: str


@dataclass(frozen=True)
class Rejection:
    """Why an order cannot be placed."""

    reason: FailureReason
    detail: str


def check_consistency(
    lines: Sequence[Line],
    shares: Sequence[Share],
    *,
    currency: str,
    total_minor: int,
    fees_minor: int,
    tax_minor: int,
    tip_minor: int,
) -> list[str]:
    """Problems with the order as sent (empty when it adds up): the invariants of the split."""
    problems: list[str] = []
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        problems.append(f"currency {currency!r} is not an ISO 4217 code")
    if not lines:
        problems.append("the order has no items")
    if not shares:
        problems.append("the order has no shares")
    for index, line in enumerate(lines):
        if not line.sku:
            problems.append(f"items[{index}] has no sku")
        if line.quantity < 1:
            problems.append(f"items[{index}] quantity must be at least 1")
        if line.unit_price_minor <= 0:
            problems.append(f"items[{index}] unit price must be positive")
    for name, value in (("fees", fees_minor), ("tax", tax_minor), ("tip", tip_minor)):
        if value < 0:
            problems.append(f"{name} must not be negative")
    expected = sum(line.amount_minor for line in lines) + fees_minor + tax_minor + tip_minor
    if expected != total_minor:
        problems.append(f"items + fees + tax + tip = {expected}, total is {total_minor}")
    if sum(share.amount_minor for share in shares) != total_minor:
        problems.append("shares do not sum to the total")
    payment_ids = [share.payment_id for share in shares]
    if any(not pid for pid in payment_ids) or len(set(payment_ids)) != len(payment_ids):
        problems.append("every share needs its own payment id")
    if any(share.amount_minor <= 0 for share in shares):
        problems.append("share amounts must be positive")
    return problems


def check_against_catalogue(
    lines: Sequence[Line], currency: str, catalogue: Mapping[str, CatalogueItem]
) -> Rejection | None:
    """The first reason the merchant cannot fill the order, or None when it can.

    Order of checks: unknown SKU, then price (and currency), then stock (summed per SKU, since
    a cart may hold the same SKU on several lines).
    """
    wanted: dict[str, int] = {}
    for line in lines:
        item = catalogue.get(line.sku)
        if item is None:
            return Rejection(FailureReason.UNKNOWN_ITEM, f"{line.sku} is not in the catalogue")
        if item.currency != currency:
            return Rejection(
                FailureReason.PRICE_MISMATCH,
                f"{line.sku} is sold in {item.currency}, the order is in {currency}",
            )
        if item.unit_price_minor != line.unit_price_minor:
            return Rejection(
                FailureReason.PRICE_MISMATCH,
                f"{line.sku} costs {item.unit_price_minor}, the order says {line.unit_price_minor}",
            )
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    for sku, quantity in wanted.items():
        if catalogue[sku].stock < quantity:
            return Rejection(
                FailureReason.OUT_OF_STOCK,
                f"{sku}: {quantity} wanted, {catalogue[sku].stock} in stock",
            )
    return None


def quote_problems(
    lines: Sequence[Line], currency: str, catalogue: Mapping[str, CatalogueItem]
) -> list[LineProblem]:
    """Every line the catalogue does not price as the cart does (empty: the cart is priced
    right): an unknown SKU, a SKU sold in another currency, a unit price that differs in
    either direction. Stock is not promised here; the order checks it when it is placed."""
    problems: list[LineProblem] = []
    for index, line in enumerate(lines):
        item = catalogue.get(line.sku)
        if item is None:
            problems.append(LineProblem(index, "sku", f"{line.sku} is not in the catalogue"))
        elif item.currency != currency:
            problems.append(
                LineProblem(
                    index,
                    "unit_price_minor",
                    f"{line.sku} is sold in {item.currency}, the cart is in {currency}",
                )
            )
        elif item.unit_price_minor != line.unit_price_minor:
            problems.append(
                LineProblem(
                    index,
                    "unit_price_minor",
                    f"{line.sku} costs {item.unit_price_minor} at the merchant, "
                    f"not {line.unit_price_minor}",
                )
            )
    return problems
