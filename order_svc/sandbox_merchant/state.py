"""The sandbox merchant's state and the rules of reserve / place / cancel.

Pure data operations (no HTTP): each returns ``(HTTP status, JSON body)``. Stock is taken at
reservation, kept by placement and returned by cancellation or release.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Reply = tuple[int, dict[str, Any]]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _error(status: int, code: str, detail: str) -> Reply:
    return status, {"error": code, "detail": detail}


@dataclass
class MerchantState:
    """Catalogue, reservations, orders, idempotency records and armed faults."""

    catalogue: dict[str, dict[str, Any]]
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: Path | None) -> None:
        """Write the state to `path` atomically (no-op when in memory)."""
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path | None, catalogue: dict[str, dict[str, Any]]) -> MerchantState:
        """The state saved at `path`, or a fresh one with `catalogue`."""
        if path is not None and path.exists():
            return cls(**json.loads(path.read_text()))
        return cls(catalogue=catalogue)

    # -- faults ------------------------------------------------------------------------------
    def take_fault(self, action: str, reference: str) -> dict[str, Any] | None:
        """The first armed fault for `action` (and `reference`, if it names one); used up."""
        for fault in self.faults:
            if fault["action"] not in (action, "any"):
                continue
            if fault.get("reference") and fault["reference"] != reference:
                continue
            if fault["remaining"] > 0:
                fault["remaining"] -= 1
            if fault["remaining"] == 0:
                self.faults.remove(fault)
            return fault
        return None

    # -- operations --------------------------------------------------------------------------
    def reserve(self, body: dict[str, Any]) -> Reply:
        """Hold stock for an order."""
        reference = str(body.get("reference", ""))
        currency = str(body.get("currency", ""))
        items = body.get("items") or []
        if not reference or not items:
            return _error(400, "BAD_REQUEST", "reference and items are required")
        for held in self.reservations.values():
            if held["reference"] == reference and held["status"] in ("held", "placed"):
                return 200, held
        wanted: dict[str, int] = {}
        for item in items:
            sku = str(item.get("sku", ""))
            entry = self.catalogue.get(sku)
            if entry is None:
                return _error(422, "UNKNOWN_ITEM", f"{sku} is not sold here")
            if entry["currency"] != currency or entry["unit_price_minor"] != int(
                item.get("unit_price_minor", -1)
            ):
                return _error(
                    409,
                    "PRICE_MISMATCH",
                    f"{sku} costs {entry['unit_price_minor']} {entry['currency']}",
                )
            quantity = int(item.get("quantity", 0))
            if quantity < 1:
                return _error(400, "BAD_REQUEST", f"{sku}: quantity must be at least 1")
            wanted[sku] = wanted.get(sku, 0) + quantity
        for sku, quantity in wanted.items():
            if self.catalogue[sku]["stock"] < quantity:
                return _error(
                    409, "OUT_OF_STOCK", f"{sku}: {self.catalogue[sku]['stock']} in stock"
                )
        for sku, quantity in wanted.items():
            self.catalogue[sku]["stock"] -= quantity
        reservation: dict[str, Any] = {
            "reservation_id": f"res_{uuid.uuid4().hex[:16]}",
            "reference": reference,
            "items": [{"sku": s, "quantity": q} for s, q in wanted.items()],
            "status": "held",
            "created_at": _now(),
        }
        self.reservations[reservation["reservation_id"]] = reservation
        return 201, reservation

    def place(self, body: dict[str, Any]) -> Reply:
        """Turn a held reservation into an order."""
        reference = str(body.get("reference", ""))
        reservation = self.reservations.get(str(body.get("reservation_id", "")))
        if reservation is None or reservation["reference"] != reference:
            return _error(404, "UNKNOWN_RESERVATION", "no such reservation for this reference")
        for existing in self.orders.values():
            if existing["reference"] == reference and existing["status"] == "placed":
                return 200, existing
        if reservation["status"] != "held":
            return _error(409, "MERCHANT_REJECTED", f"reservation is {reservation['status']}")
        reservation["status"] = "placed"
        order: dict[str, Any] = {
            "merchant_order_id": f"mo_{uuid.uuid4().hex[:16]}",
            "reference": reference,
            "reservation_id": reservation["reservation_id"],
            "items": reservation["items"],
            "total_minor": int(body.get("total_minor", 0)),
            "currency": str(body.get("currency", "")),
            "status": "placed",
            "created_at": _now(),
        }
        self.orders[order["merchant_order_id"]] = order
        return 201, order

    def cancel(self, body: dict[str, Any]) -> Reply:
        """Cancel the order and/or release the reservation held for a reference."""
        reference = str(body.get("reference", ""))
        if not reference:
            return _error(400, "BAD_REQUEST", "reference is required")
        result = "nothing"
        for order in self.orders.values():
            if order["reference"] == reference and order["status"] == "placed":
                order["status"] = "cancelled"
                order["cancelled_at"] = _now()
                result = "cancelled"
        for reservation in self.reservations.values():
            if reservation["reference"] == reference and reservation["status"] in (
                "held",
                "placed",
            ):
                if reservation["status"] == "held":
                    result = "released" if result == "nothing" else result
                reservation["status"] = "released"
                for item in reservation["items"]:
                    self.catalogue[item["sku"]]["stock"] += item["quantity"]
        return 200, {"reference": reference, "result": result}
