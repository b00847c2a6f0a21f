"""The sandbox merchant's default catalogue (the SKUs the demo and tests use).

All prices in USD minor units (cents). ``TRUFFLE-SPECIAL`` has a stock of 1 so a demo can run
it out; everything else is plentiful. ``MPPO_MERCHANT_CATALOGUE`` may name a JSON file with a
list of ``{"sku", "name", "unit_price_minor", "currency", "stock"}`` objects instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_CATALOGUE: tuple[dict[str, Any], ...] = (
    {"sku": "PIZZA-MARGHERITA", "name": "Margherita pizza", "unit_price_minor": 1200, "stock": 500},
    {"sku": "PIZZA-PEPPERONI", "name": "Pepperoni pizza", "unit_price_minor": 1450, "stock": 500},
    {"sku": "GARLIC-BREAD", "name": "Garlic bread", "unit_price_minor": 550, "stock": 500},
    {"sku": "SALAD-CAESAR", "name": "Caesar salad", "unit_price_minor": 900, "stock": 500},
    {"sku": "SODA-CAN", "name": "Soda (can)", "unit_price_minor": 250, "stock": 1000},
    {"sku": "TIRAMISU", "name": "Tiramisu", "unit_price_minor": 700, "stock": 200},
    {"sku": "TRUFFLE-SPECIAL", "name": "Truffle special", "unit_price_minor": 3200, "stock": 1},
)
DEFAULT_CURRENCY = "USD"


def load_catalogue(path: str | None) -> dict[str, dict[str, Any]]:
    """The catalogue by SKU: from `path` (JSON list) or the default one."""
    raw: list[dict[str, Any]] = (
        json.loads(Path(path).read_text()) if path else [dict(i) for i in DEFAULT_CATALOGUE]
    )
    catalogue: dict[str, dict[str, Any]] = {}
    for item in raw:
        catalogue[str(item["sku"])] = {
            "sku": str(item["sku"]),
            "name": str(item.get("name", item["sku"])),
            "unit_price_minor": int(item["unit_price_minor"]),
            "currency": str(item.get("currency", DEFAULT_CURRENCY)),
            "stock": int(item["stock"]),
        }
    return catalogue
