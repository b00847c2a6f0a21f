"""Carts priced from the sandbox merchant's default catalogue, for tests that want a given
total: the group service refuses a cart the merchant's catalogue prices differently (QuoteCart),
so test carts use catalogue lines and make up the rest of the total with a fee."""

from __future__ import annotations

from dataclasses import dataclass

from order_svc.sandbox_merchant.catalogue import DEFAULT_CATALOGUE

#: sku → (name, unit price in USD cents); TRUFFLE-SPECIAL (one in stock) is left out
PRICES: dict[str, tuple[str, int]] = {
    str(item["sku"]): (str(item["name"]), int(item["unit_price_minor"]))
    for item in DEFAULT_CATALOGUE
    if int(item["stock"]) > 1
}


@dataclass(frozen=True)
class PricedLine:
    """One cart line at the catalogue's price."""

    line_id: str
    sku: str
    name: str
    quantity: int
    unit_price_minor: int


def priced_cart(total: int) -> tuple[list[PricedLine], int]:
    """(lines, fees) adding up to `total` cents: as many of the dearest catalogue item that
    fits as fit, the rest as a fee."""
    fitting = sorted((price, sku) for sku, (_, price) in PRICES.items() if price <= total)
    if not fitting:
        raise ValueError(f"no catalogue item costs {total} cents or less")
    price, sku = fitting[-1]
    quantity = total // price
    line = PricedLine("l1", sku, PRICES[sku][0], quantity, price)
    return [line], total - quantity * price
