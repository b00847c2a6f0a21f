"""In-memory stand-ins for the payment service layer's ports (cosmicpython's fakes): a unit of
work with transactional semantics over a dict "database", a scripted payment provider and a
group membership oracle. No Postgres, no network."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from mppo.clients.group import SERVICE_VIEW, GroupView
from mppo.platform.errors import NotFoundError
from mppo.platform.events import Event
from mppo.platform.identity import Caller
from mppo.platform.unit_of_work import UnitOfWork
from payment_svc.adapters.providers import payload
from payment_svc.adapters.providers.base import (
    CheckoutRequest,
    CheckoutResult,
    ProviderError,
    ProviderEvent,
    ProviderPaymentState,
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)
from payment_svc.adapters.repository import ReceivedWebhook
from payment_svc.domain.model import Payment, StatusChange
from payment_svc.service_layer.messages import to_event
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork


@dataclass
class Row:
    """One payments row with the columns the aggregate does not carry."""

    payment: Payment
    return_url: str = ""
    payer_user_id: str = ""
    next_check_at: datetime | None = None
    checks: int = 0
    compensate_reason: str = ""
    warned: bool = False


@dataclass
class Database:
    """What the payment tables hold."""

    rows: dict[str, Row] = field(default_factory=dict)
    provider_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    webhooks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    closed_groups: dict[str, str] = field(default_factory=dict)
    history: list[tuple[str, StatusChange]] = field(default_factory=list)


class FakePaymentRepository:
    """The PaymentRepository port over a working copy of the Database."""

    def __init__(self, db: Database, uow: UnitOfWork) -> None:
        self.db = db
        self._uow = uow

    def _out(self, row: Row | None) -> Payment | None:
        if row is None:
            return None
        payment = copy.deepcopy(row.payment)
        self._uow.track(payment)
        return payment

    async def get(
        self, payment_id: str, *, lock: bool = False, alone: bool = False
    ) -> Payment | None:
        return self._out(self.db.rows.get(payment_id))

    async def get_attempt(self, group_id: str, member_id: str, attempt: int) -> Payment | None:
        for row in self.db.rows.values():
            p = row.payment
            if (p.group_id, p.member_id, p.attempt) == (group_id, member_id, attempt):
                return self._out(row)
        return None

    async def list_group(
        self, group_id: str, *, after: str = "", limit: int | None = None
    ) -> list[Payment]:
        found = [
            p
            for row in self.db.rows.values()
            if row.payment.group_id == group_id and (p := self._out(row)) is not None
        ]
        if after:
            ids = [p.payment_id for p in found]
            found = found[ids.index(after) + 1 :] if after in ids else []
        return found if limit is None else found[:limit]

    async def add(
        self, payment: Payment, *, return_url: str, payer_user_id: str, check_at: datetime
    ) -> bool:
        self._uow.track(payment)
        if await self.get_attempt(payment.group_id, payment.member_id, payment.attempt):
            return False
        if payment.group_id in self.db.closed_groups:
            return False
        self.db.rows[payment.payment_id] = Row(
            copy.deepcopy(payment),
            return_url=return_url,
            payer_user_id=payer_user_id,
            next_check_at=check_at,
        )
        return True

    async def save(self, payment: Payment) -> None:
        stored = copy.deepcopy(payment)
        stored.events.clear()
        stored.changes.clear()
        self.db.rows[payment.payment_id].payment = stored
        self.db.history.extend((payment.payment_id, c) for c in payment.changes)
        payment.changes.clear()

    async def attach_checkout(
        self, payment: Payment, provider_ids: Sequence[str]
    ) -> Payment | None:
        self._uow.track(payment)
        row = self.db.rows[payment.payment_id]
        if row.payment.payment_link:
            return None
        stored = row.payment
        stored.provider_payment_id = payment.provider_payment_id
        stored.provider_checkout_id = payment.provider_checkout_id
        stored.payment_link = payment.payment_link
        if payment.authorization_expires_at is not None:
            stored.authorization_expires_at = payment.authorization_expires_at
        self.db.history.extend((payment.payment_id, c) for c in payment.changes)
        payment.changes.clear()
        for provider_id in provider_ids:
            await self.map_provider_id(stored.provider, provider_id, stored.payment_id)
        return copy.deepcopy(stored)

    async def schedule_check(self, payment_id: str, at: datetime | None, *, reset: bool) -> None:
        row = self.db.rows[payment_id]
        row.next_check_at = at
        if reset:
            row.checks = 0

    async def map_provider_id(
        self, provider: str, provider_payment_id: str, payment_id: str
    ) -> None:
        if provider_payment_id:
            self.db.provider_ids.setdefault((provider, provider_payment_id), payment_id)

    async def receive_webhook(
        self,
        provider: str,
        event_id: str,
        event_type: str,
        provider_payment_id: str,
        body: str,
        provider_ids: Sequence[str],
    ) -> ReceivedWebhook | None:
        if not await self.record_webhook(provider, event_id, event_type, provider_payment_id, body):
            return None
        known = {
            i: self.db.provider_ids[(provider, i)]
            for i in provider_ids
            if (provider, i) in self.db.provider_ids
        }
        owners = set(known.values())
        locked = await self.get(owners.pop(), lock=True) if len(owners) == 1 else None
        return ReceivedWebhook(known, locked)

    async def record_webhook(
        self, provider: str, event_id: str, event_type: str, provider_payment_id: str, body: str
    ) -> bool:
        if (provider, event_id) in self.db.webhooks:
            return False
        self.db.webhooks[(provider, event_id)] = {
            "outcome": "received",
            "payment_id": None,
            "event_type": event_type,
            "body": body,
        }
        return True

    async def webhook_outcome(
        self,
        provider: str,
        event_id: str,
        outcome: str,
        payment_id: str | None,
        *,
        detail: str = "",
    ) -> None:
        self.db.webhooks[(provider, event_id)].update(
            outcome=outcome, payment_id=payment_id, detail=detail
        )

    async def close_group(self, group_id: str, reason: str) -> None:
        self.db.closed_groups.setdefault(group_id, reason)
        for row in self.db.rows.values():
            if row.payment.group_id == group_id and not row.compensate_reason:
                row.compensate_reason = reason
                row.next_check_at = datetime.now(UTC)
                row.checks = 0

    async def compensate(self, payment_ids: Sequence[str], reason: str) -> None:
        for payment_id in payment_ids:
            row = self.db.rows.get(payment_id)
            if row is not None and not row.compensate_reason:
                row.compensate_reason = reason

    async def group_closed(self, group_id: str) -> str | None:
        return self.db.closed_groups.get(group_id)

    async def compensate_reason(self, payment_id: str) -> str:
        row = self.db.rows.get(payment_id)
        return row.compensate_reason if row is not None else ""

    async def claim_due(self, limit: int, statuses: Sequence[str]) -> list[tuple[str, int]]:
        now = datetime.now(UTC)
        due = [
            (row.next_check_at, payment_id, row.checks)
            for payment_id, row in self.db.rows.items()
            if row.next_check_at is not None
            and row.next_check_at <= now
            and row.payment.status.value in statuses
        ]
        return [(payment_id, checks) for _, payment_id, checks in sorted(due)[:limit]]

    async def bump_check(self, payment_id: str, at: datetime) -> None:
        row = self.db.rows[payment_id]
        row.next_check_at = at
        row.checks += 1

    async def expiring(self, before: datetime, limit: int) -> list[str]:
        return [
            payment_id
            for payment_id, row in self.db.rows.items()
            if row.payment.status.value == "authorized"
            and row.payment.authorization_expires_at is not None
            and row.payment.authorization_expires_at <= before
            and not row.warned
        ][:limit]

    async def mark_warned(self, payment_id: str) -> None:
        self.db.rows[payment_id].warned = True

    async def flush(self) -> None:
        """Nothing is queued: every write above lands in the working copy at once."""


class FakeUnitOfWork(PaymentUnitOfWork):
    """A PaymentUnitOfWork over `db`: each ``async with`` works on a copy that only a commit
    writes back; committed outbox events land in `published` (shared by every unit of work
    made for the same `published` list)."""

    def __init__(self, db: Database, published: list[Event] | None = None) -> None:
        UnitOfWork.__init__(self, sessions=None, translate=to_event)  # type: ignore[arg-type]
        self.db = db
        self.published: list[Event] = [] if published is None else published
        self.commits = 0
        self._working: Database | None = None

    async def __aenter__(self) -> Self:
        self._reset()
        self._working = copy.deepcopy(self.db)
        self.payments = FakePaymentRepository(self._working, self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._working = None
        self._reset()

    async def commit(self) -> None:
        assert self._working is not None, "commit outside 'async with'"
        events = [*self._events, *self._drain()]
        self.db.__dict__.update(copy.deepcopy(self._working).__dict__)
        self.published.extend(events)
        self.commits += 1
        callbacks, self._after_commit = self._after_commit, []
        self._events = []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        assert self.db is not None
        self._working = copy.deepcopy(self.db)
        self.payments = FakePaymentRepository(self._working, self)
        self._reset()


class FakeProvider:
    """A Stripe-like provider kept in memory: states per provider id, every call recorded, and
    a queue of failures to raise next.

    Each checkout is a session ``cs_N`` with a payment ``pi_N`` behind it, made at once (like
    the sandbox) or, with ``lazy``, only when the payer confirms (``confirm``, like real
    Stripe): until then the checkout's provider id is the session's."""

    name = "sandbox"
    can_authorize = True
    SIGNATURE = "valid"

    def __init__(self, *, lazy: bool = False) -> None:
        self.lazy = lazy
        self.states: dict[str, ProviderPaymentState] = {}
        #: checkout (session) id → the ids that belong to it
        self.checkouts: dict[str, set[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures: list[ProviderError] = []
        self._ids = itertools.count(1)

    def _fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def _set(self, ppid: str, status: ProviderStatus, **amounts: int) -> ProviderPaymentState:
        before = self.states[ppid]
        state = ProviderPaymentState(
            provider_payment_id=ppid,
            status=status,
            amount_authorized_minor=amounts.get("authorized", before.amount_authorized_minor),
            amount_captured_minor=amounts.get("captured", before.amount_captured_minor),
            amount_refunded_minor=amounts.get("refunded", before.amount_refunded_minor),
        )
        self.states[ppid] = state
        return state

    def authorize(self, ppid: str, amount: int) -> None:
        """The payer completed the hosted page."""
        self._set(ppid, ProviderStatus.AUTHORIZED, authorized=amount)

    def confirm(self, session_id: str) -> str:
        """The payer confirmed a lazy checkout: its payment exists now; returns its id."""
        ppid = "pi_" + session_id.removeprefix("cs_")
        self.checkouts[session_id].add(ppid)
        self.states[ppid] = ProviderPaymentState(ppid, ProviderStatus.REQUIRES_ACTION)
        return ppid

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        self.calls.append(("checkout", request.idempotency_key))
        self._fail()
        number = next(self._ids)
        session_id, ppid = f"cs_{number}", f"pi_{number}"
        self.checkouts[session_id] = {session_id}
        if self.lazy:
            return CheckoutResult(session_id, f"https://pay.example/{session_id}", None)
        self.checkouts[session_id].add(ppid)
        self.states[ppid] = ProviderPaymentState(ppid, ProviderStatus.REQUIRES_ACTION)
        return CheckoutResult(ppid, f"https://pay.example/{ppid}", None, session_id)

    async def checkout_ids(self, checkout_id: str) -> frozenset[str]:
        self.calls.append(("checkout_ids", checkout_id))
        self._fail()
        return frozenset(self.checkouts.get(checkout_id, {checkout_id}))

    async def capture(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        self.calls.append(("capture", idempotency_key))
        self._fail()
        return self._set(provider_payment_id, ProviderStatus.CAPTURED, captured=amount_minor)

    async def void(self, provider_payment_id: str, idempotency_key: str) -> ProviderPaymentState:
        self.calls.append(("void", idempotency_key))
        self._fail()
        return self._set(provider_payment_id, ProviderStatus.VOIDED)

    async def refund(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        self.calls.append(("refund", idempotency_key))
        self._fail()
        state = self.states[provider_payment_id]
        total = state.amount_refunded_minor + amount_minor
        status = (
            ProviderStatus.REFUNDED
            if total >= state.amount_captured_minor
            else ProviderStatus.PARTIALLY_REFUNDED
        )
        return self._set(provider_payment_id, status, refunded=total)

    async def fetch(self, provider_payment_id: str) -> ProviderPaymentState:
        self.calls.append(("fetch", provider_payment_id))
        self._fail()
        if provider_payment_id in self.checkouts:  # a session: its payment, once there is one
            ids = self.checkouts[provider_payment_id] - {provider_payment_id}
            if not ids:
                return ProviderPaymentState(provider_payment_id, ProviderStatus.REQUIRES_ACTION)
            provider_payment_id = next(iter(ids))
        return self.states[provider_payment_id]

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderPaymentState:
        """Close the session while its payment waits (VOIDED; EXPIRED when it has none yet);
        a payment that moved on first is reported as it stands."""
        self.calls.append(("expire", idempotency_key))
        self._fail()
        ids = self.checkouts.get(checkout_id, {checkout_id}) - {checkout_id}
        if not ids:
            return ProviderPaymentState(checkout_id, ProviderStatus.EXPIRED)
        ppid = next(iter(ids))
        if self.states[ppid].status is ProviderStatus.REQUIRES_ACTION:
            return self._set(ppid, ProviderStatus.VOIDED)
        return self.states[ppid]

    async def verify_webhook(self, request: WebhookRequest) -> None:
        if request.headers.get("x-signature") != self.SIGNATURE:
            raise WebhookVerificationError("bad signature")

    def parse_event(self, request: WebhookRequest) -> ProviderEvent:
        data = payload.load_object(request.body, "fake event")
        if not isinstance(data.get("id"), str):
            raise WebhookVerificationError("malformed: no event id")
        status = data.get("status")
        return ProviderEvent(
            event_id=str(data["id"]),
            event_type=str(data.get("type", "payment.updated")),
            provider_payment_id=str(data.get("object", "")),
            status=ProviderStatus(status) if status else None,
            amount_minor=int(data.get("amount", 0)),
            merchant_reference=str(data.get("reference", "")),
            other_ids=tuple(data.get("also", ())),
        )


class FakeGroups:
    """Group membership: group id → (host user, {member id: user})."""

    def __init__(self) -> None:
        self.groups: dict[str, tuple[str, dict[str, str]]] = {}

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        if caller.service and not caller.user_id:
            return SERVICE_VIEW
        found = self.groups.get(group_id)
        if found is None:
            raise NotFoundError("group not found")
        host, members = found
        if caller.user_id != host and caller.user_id not in members.values():
            raise NotFoundError("group not found")
        return GroupView(
            everything=False,
            is_host=caller.user_id == host,
            own_member_ids=frozenset(m for m, u in members.items() if u == caller.user_id),
        )
