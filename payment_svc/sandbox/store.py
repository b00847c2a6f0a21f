"""The sandbox's state: sessions, payment intents, charges, refunds, events and the ledger.

Objects are plain dicts shaped like Stripe's. Every change is appended to a JSON-lines journal
(when a state file is configured) and replayed at start; without one, state is in memory and
lost on restart (documented for tests that want that).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)

CARD_SUCCESS = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_CAPTURE_FAILS = "4000000000000341"
TEST_CARDS = {
    CARD_SUCCESS: "authorizes; capture succeeds",
    CARD_DECLINE: "declined (card_declined)",
    CARD_CAPTURE_FAILS: "authorizes; capture is declined",
}

Obj = dict[str, Any]


class SandboxError(Exception):
    """A Stripe-style API error: HTTP status, error type, code, message, param."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", code: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message

    def body(self) -> Obj:
        """The JSON error body Stripe sends."""
        error: Obj = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            if self.type == "card_error":
                error["decline_code"] = "generic_decline"
        return {"error": error}


def public(obj: Obj) -> Obj:
    """A copy of ``obj`` without the sandbox's private ``_`` fields, as the API shows it."""
    copied: Obj = json.loads(json.dumps(obj))
    return {k: v for k, v in copied.items() if not k.startswith("_")}


def new_id(prefix: str) -> str:
    """A Stripe-looking id such as ``pi_3Nf…``."""
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class LedgerEntry:
    """One movement of money: hold, capture, release (of a hold) or refund."""

    id: str
    kind: str
    payment_intent: str
    group_id: str
    amount: int
    currency: str
    created: float

    def to_json(self) -> Obj:
        """As JSON."""
        return dict(vars(self))


class Store:
    """Everything the sandbox knows, with an append-only journal."""

    def __init__(
        self,
        journal: Path | None,
        public_url: str,
        authorization_days: float,
        on_event: Callable[[Obj], None] | None = None,
    ) -> None:
        self.sessions: dict[str, Obj] = {}
        self.intents: dict[str, Obj] = {}
        self.charges: dict[str, Obj] = {}
        self.refunds: dict[str, Obj] = {}
        self.events: dict[str, Obj] = {}
        self.ledger: list[LedgerEntry] = []
        self.idempotency: dict[str, Obj] = {}
        self._public_url = public_url.rstrip("/")
        self._authorization_seconds = authorization_days * 86400
        #: seconds the sandbox's clock is off real time (POST /_sandbox/clock): what it stamps
        #: on objects (created, capture_before) moves with it; webhook signatures do not
        self.clock_offset = 0.0
        self._journal_path = journal
        self._journal: TextIO | None = None
        self.on_event = on_event
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            if journal.exists():
                self._replay(journal)
            self._journal = journal.open("a", encoding="utf-8")

    # journal -------------------------------------------------------------------------------
    def _replay(self, path: Path) -> None:
        tables: dict[str, dict[str, Obj]] = {
            "session": self.sessions,
            "pi": self.intents,
            "charge": self.charges,
            "refund": self.refunds,
            "event": self.events,
            "idem": self.idempotency,
        }
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("sandbox journal: skipping a torn line")
                continue
            kind, data = record["t"], record["d"]
            if kind == "ledger":
                self.ledger.append(LedgerEntry(**data))
            else:
                tables[kind][str(data["id"])] = data
        logger.info("sandbox state replayed: %s payment intents", len(self.intents))

    def _write(self, kind: str, data: Obj) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps({"t": kind, "d": data}, separators=(",", ":")) + "\n")
            self._journal.flush()

    def now(self) -> float:
        """The sandbox's clock: real time plus the offset set through /_sandbox/clock."""
        return time.time() + self.clock_offset

    def save(self, kind: str, obj: Obj) -> Obj:
        """Record a new version of an object."""
        self._write(kind, obj)
        return obj

    def close(self) -> None:
        """Close the journal."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # idempotency ----------------------------------------------------------------------------
    def remembered(self, key: str) -> Obj | None:
        """The stored response of an earlier request with this idempotency key."""
        return self.idempotency.get(key)

    def remember(self, key: str, fingerprint: str, status: int, body: Obj) -> None:
        """Store a response under its idempotency key."""
        self.idempotency[key] = self.save(
            "idem", {"id": key, "fingerprint": fingerprint, "status": status, "body": body}
        )

    # events and ledger -----------------------------------------------------------------------
    def emit(self, event_type: str, obj: Obj) -> Obj:
        """Create (and hand to the deliverer) a Stripe event about ``obj``."""
        event: Obj = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": "2025-01-27.acacia",
            "created": int(self.now()),
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": public(obj)},
            "_delivery": {"status": "pending", "attempts": 0, "last_error": ""},
        }
        self.events[event["id"]] = self.save("event", event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def mark_delivery(self, event: Obj, status: str, attempts: int, error: str = "") -> None:
        """Record how delivering ``event`` went."""
        event["_delivery"] = {"status": status, "attempts": attempts, "last_error": error}
        self.save("event", event)

    def book(self, kind: str, intent: Obj, amount: int) -> None:
        """Add a ledger entry for ``intent``."""
        if amount <= 0:
            return
        entry = LedgerEntry(
            id=new_id("le"),
            kind=kind,
            payment_intent=str(intent["id"]),
            group_id=str(intent.get("metadata", {}).get("group_id", "")),
            amount=amount,
            currency=str(intent["currency"]),
            created=self.now(),
        )
        self.ledger.append(entry)
        self._write("ledger", entry.to_json())

    def ledger_view(self, group_id: str = "", payment_intent: str = "") -> Obj:
        """Entries (filtered) and totals: what is held, captured, refunded and kept."""
        entries = [
            e
            for e in self.ledger
            if (not group_id or e.group_id == group_id)
            and (not payment_intent or e.payment_intent == payment_intent)
        ]
        totals = {k: 0 for k in ("hold", "capture", "release", "refund")}
        for entry in entries:
            totals[entry.kind] += entry.amount
        return {
            "entries": [e.to_json() for e in entries],
            "totals": totals,
            "held": totals["hold"] - totals["capture"] - totals["release"],
            "kept": totals["capture"] - totals["refund"],
        }

    # objects --------------------------------------------------------------------------------
    def session(self, session_id: str) -> Obj:
        """A checkout session, or a 404 error."""
        found = self.sessions.get(session_id)
        if found is None:
            raise SandboxError(
                404, f"No such checkout.session: '{session_id}'", code="resource_missing"
            )
        return found

    def intent(self, intent_id: str) -> Obj:
        """A payment intent, or a 404 error."""
        found = self.intents.get(intent_id)
        if found is None:
            raise SandboxError(
                404, f"No such payment_intent: '{intent_id}'", code="resource_missing"
            )
        return found

    def intent_view(self, intent: Obj, expand: list[str]) -> Obj:
        """The intent as the API returns it (``latest_charge`` expanded on request)."""
        view = public(intent)
        if "latest_charge" in expand and intent.get("latest_charge"):
            view["latest_charge"] = public(self.charges[str(intent["latest_charge"])])
        return view

    def create_session(self, params: Obj) -> Obj:
        """A checkout session with a manual-capture payment intent behind it."""
        if params.get("mode", "payment") != "payment":
            raise SandboxError(400, "only mode=payment is supported", code="parameter_invalid")
        items = params.get("line_items") or []
        if not isinstance(items, list) or not items:
            raise SandboxError(400, "line_items is required", code="parameter_missing")
        amount, currency, names = 0, "", []
        for item in items:
            price = item.get("price_data") or {}
            try:
                unit = int(price["unit_amount"])
                quantity = int(item.get("quantity", 1))
            except (KeyError, ValueError) as exc:
                raise SandboxError(400, f"bad line item: {exc}", code="parameter_invalid") from exc
            if unit < 0 or quantity < 1:
                raise SandboxError(400, "amounts must be positive", code="parameter_invalid")
            item_currency = str(price.get("currency", "")).lower()
            if not item_currency or (currency and item_currency != currency):
                raise SandboxError(400, "one currency per session", code="parameter_invalid")
            currency = item_currency
            amount += unit * quantity
            names.append(str((price.get("product_data") or {}).get("name", "")))
        if amount <= 0:
            raise SandboxError(400, "amount must be positive", code="amount_too_small")
        pi_data = params.get("payment_intent_data") or {}
        capture_method = str(pi_data.get("capture_method", "automatic"))
        metadata = {**(params.get("metadata") or {}), **(pi_data.get("metadata") or {})}
        now = int(self.now())
        session_id = new_id("cs_test")
        intent: Obj = {
            "id": new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": currency,
            "status": "requires_payment_method",
            "capture_method": capture_method,
            "description": str(pi_data.get("description", "")) or "; ".join(names),
            "metadata": metadata,
            "latest_charge": None,
            "last_payment_error": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "created": now,
            "livemode": False,
            "_session": session_id,
        }
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "currency": currency,
            "payment_intent": intent["id"],
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata") or {},
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "url": f"{self._public_url}/checkout/{session_id}",
            "expires_at": now + 24 * 3600,
            "created": now,
            "livemode": False,
            "_merchant": str(metadata.get("merchant", "MPPO group order")),
            "_description": "; ".join(n for n in names if n),
        }
        self.intents[intent["id"]] = self.save("pi", intent)
        self.sessions[session_id] = self.save("session", session)
        return session

    def pay(self, session_id: str, card_number: str, action: str) -> Obj:
        """The payer submits the hosted page: authorize, capture at once, or decline."""
        session = self.session(session_id)
        intent = self.intent(str(session["payment_intent"]))
        if session["status"] != "open":
            raise SandboxError(
                409, f"this checkout is {session['status']}", code="checkout_not_open"
            )
        card = "".join(ch for ch in card_number if ch.isdigit()) or CARD_SUCCESS
        if action == "decline" or card == CARD_DECLINE or card not in TEST_CARDS:
            reason = "card_declined" if action != "decline" else "payer_declined"
            if card not in TEST_CARDS and action != "decline":
                reason = "incorrect_number"
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": reason,
                "decline_code": "generic_decline",
                "message": "Your card was declined."
                if reason != "payer_declined"
                else "The payer declined to pay.",
            }
            session.update(status="expired", payment_status="unpaid")
            self.save("pi", intent)
            self.save("session", session)
            self.emit("payment_intent.payment_failed", intent)
            return {"outcome": "declined", "reason": reason, "payment_intent": intent["id"]}
        charge: Obj = {
            "id": new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "captured": False,
            "refunded": False,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "metadata": intent["metadata"],
            "status": "succeeded",
            "payment_method_details": {
                "type": "card",
                "card": {
                    "brand": "visa",
                    "last4": card[-4:],
                    "capture_before": int(self.now() + self._authorization_seconds),
                },
            },
            "created": int(self.now()),
            "_card": card,
        }
        self.charges[charge["id"]] = self.save("charge", charge)
        intent["latest_charge"] = charge["id"]
        intent["last_payment_error"] = None
        self.book("hold", intent, int(intent["amount"]))
        session["status"] = "complete"
        if intent["capture_method"] == "manual":
            intent.update(status="requires_capture", amount_capturable=intent["amount"])
        else:
            self._capture(intent, charge, int(intent["amount"]))
            session["payment_status"] = "paid"
        self.save("pi", intent)
        self.save("session", session)
        self.emit("checkout.session.completed", session)
        if intent["status"] == "requires_capture":
            self.emit("payment_intent.amount_capturable_updated", intent)
        else:
            self.emit("payment_intent.succeeded", intent)
        return {"outcome": intent["status"], "payment_intent": intent["id"]}

    def _capture(self, intent: Obj, charge: Obj, amount: int) -> None:
        held = int(intent["amount"])
        charge.update(amount_captured=amount, captured=True)
        intent.update(status="succeeded", amount_capturable=0, amount_received=amount)
        self.book("capture", intent, amount)
        self.book("release", intent, held - amount)
        self.save("charge", charge)

    def capture(self, intent_id: str, amount: int | None) -> Obj:
        """Capture a held payment intent (in full, or ``amount`` and release the rest)."""
        intent = self.intent(intent_id)
        if intent["status"] != "requires_capture":
            raise SandboxError(
                400,
                f"This PaymentIntent could not be captured because it has a status of "
                f"{intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        amount = int(intent["amount_capturable"]) if amount is None else amount
        if not 0 < amount <= int(intent["amount_capturable"]):
            raise SandboxError(400, "amount_to_capture is out of range", code="amount_too_large")
        charge = self.charges[str(intent["latest_charge"])]
        if charge.get("_card") == CARD_CAPTURE_FAILS:
            raise SandboxError(
                402, "Your card was declined.", type_="card_error", code="card_declined"
            )
        self._capture(intent, charge, amount)
        self.save("pi", intent)
        self.emit("payment_intent.succeeded", intent)
        return intent

    def cancel(self, intent_id: str, reason: str) -> Obj:
        """Cancel a payment intent: release its hold (or close its unpaid checkout)."""
        intent = self.intent(intent_id)
        if intent["status"] not in ("requires_payment_method", "requires_capture"):
            raise SandboxError(
                400,
                f"You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        if intent["status"] == "requires_capture":
            self.book("release", intent, int(intent["amount_capturable"]))
        intent.update(
            status="canceled",
            amount_capturable=0,
            canceled_at=int(self.now()),
            cancellation_reason=reason or "requested_by_customer",
        )
        session = self.sessions.get(str(intent.get("_session")))
        if session is not None and session["status"] == "open":
            session["status"] = "expired"
            self.save("session", session)
        self.save("pi", intent)
        self.emit("payment_intent.canceled", intent)
        return intent

    def expire_session(self, session_id: str) -> Obj:
        """Expire an open checkout session (its intent is cancelled)."""
        session = self.session(session_id)
        if session["status"] != "open":
            raise SandboxError(400, f"session is {session['status']}", code="session_not_open")
        self.cancel(str(session["payment_intent"]), "abandoned")
        return self.session(session_id)

    def refund(self, intent_id: str, amount: int | None, reason: str) -> Obj:
        """Refund captured money (what is left, or ``amount``)."""
        intent = self.intent(intent_id)
        charge = self.charges.get(str(intent.get("latest_charge")))
        if intent["status"] != "succeeded" or charge is None:
            raise SandboxError(
                400,
                "This PaymentIntent has no captured charge to refund.",
                code="charge_not_captured",
            )
        left = int(charge["amount_captured"]) - int(charge["amount_refunded"])
        amount = left if amount is None else amount
        if amount <= 0 or amount > left:
            raise SandboxError(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="charge_already_refunded" if left == 0 else "amount_too_large",
            )
        refund: Obj = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "charge": charge["id"],
            "payment_intent": intent["id"],
            "reason": reason or None,
            "status": "succeeded",
            "created": int(self.now()),
            "metadata": {},
        }
        self.refunds[refund["id"]] = self.save("refund", refund)
        charge["amount_refunded"] = int(charge["amount_refunded"]) + amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        self.save("charge", charge)
        self.book("refund", intent, amount)
        self.emit("charge.refunded", charge)
        return refund
