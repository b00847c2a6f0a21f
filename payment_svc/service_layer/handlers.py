"""Handlers of the payment service: create, read, capture, void, refund, sync, webhooks,
reconciliation, and the group-closed events.

Every handler has the one shape ``handler(message, uow)``: the message is a command from
:mod:`payment_svc.service_layer.commands` or an event payload, the unit of work is fresh for a
command (the handler opens it, possibly several times in a row) and already open for an event
(the inbox opened it). The handlers' own dependencies (providers, settings, the group client,
the replay cache, the reconciler's wake-up, the clock) are bound once in bootstrap, on
:class:`PaymentHandlers`.

Provider calls never run while a payment row is locked, except when a webhook arrives out of
order and the provider must be re-read to decide. Each money movement is: read and check in
one transaction, call the provider with a stable idempotency key (the adapter retries with the
same key), then apply what the provider reports in a second transaction that locks the row and
moves the state only forward, so concurrent or repeated calls end in one outcome.

A webhook is matched to one of our payments only through provider ids we recorded (at
checkout, or proven since). An id we have not seen yet is accepted only after the provider,
asked about the checkout we created (``checkout_ids``, outside any transaction), lists it
there; the reference the event echoes back (metadata, notes, custom id) only says which
checkout to ask about. An event whose ids do not belong to the payment it names is recorded as
``mismatch`` and changes nothing (answered OK, so the provider stops retrying); a signed body
of the wrong shape is recorded as ``malformed`` (a hash, not the body) and refused with
INVALID_ARGUMENT.

A webhook costs one transaction when its ids are ours: one statement stores it (a redelivery
stops there), finds the payments its ids name and locks the one they name; the state change,
history, id mappings and outcome are one more, the outbox a third. Only an id new to us takes
a second transaction, after the provider was asked.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mppo.clients.group import GroupView
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2
from mppo.platform.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from mppo.platform.event_types import subject_of
from mppo.platform.identity import Caller
from mppo.platform.logs import bind_ids
from mppo.platform.providers import DEFAULT_HOLD_WINDOWS
from payment_svc.adapters.providers.base import (
    CheckoutRequest,
    PaymentProvider,
    ProviderError,
    ProviderEvent,
    ProviderPaymentState,
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)
from payment_svc.adapters.repository import ReceivedWebhook
from payment_svc.domain.model import (
    MONEY_STATES,
    TERMINAL,
    Observation,
    Payment,
    PaymentStatus,
    ordering,
)
from payment_svc.observability import WEBHOOK_VERIFICATION_FAILURES, WEBHOOKS_RECEIVED
from payment_svc.service_layer import commands
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork
from payment_svc.settings import PaymentSettings

logger = logging.getLogger(__name__)

S = PaymentStatus
#: who the reconciler's commands come from
RECONCILER = Caller(service="reconciler")
#: the states the reconciler re-reads
WATCHED = (S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.PARTIALLY_REFUNDED)

GroupClosed = (
    group_events_pb2.GroupExpired | group_events_pb2.GroupCancelled | order_events_pb2.OrderFailed
)


class GroupViews(Protocol):
    """Who may see what of a group (mppo.clients.group.GroupClient in production)."""

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        """The caller's view of `group_id`; NotFoundError when they may not see it at all."""


class IntentReplay(Protocol):
    """(group, member, attempt) → payment id, a fast path for replays (Redis in production;
    never the source of truth, so a miss or an outage only means a database read)."""

    async def get(self, group_id: str, member_id: str, attempt: int) -> str | None:
        """The payment id, or None."""

    async def put(self, group_id: str, member_id: str, attempt: int, payment_id: str) -> None:
        """Remember a committed payment."""


@dataclass(frozen=True)
class WebhookResult:
    """What HandleWebhook answers."""

    event_id: str
    duplicate: bool


@dataclass(frozen=True)
class _Claim:
    """A webhook naming ids new to us next to (or instead of) a payment of ours: accepted only
    if the provider lists ``unknown`` on that payment's checkout."""

    payment_id: str
    checkout_id: str
    unknown: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class WebhookMatch:
    """Which payment a webhook is about: ``payment_id`` when its ids are ours (``new_ids`` are
    those the provider just confirmed, to remember), else why not (``outcome`` "unmatched" or
    "mismatch", with ``detail`` for the operator)."""

    payment_id: str | None
    outcome: str = "matched"
    new_ids: tuple[str, ...] = ()
    detail: str = ""


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def observation(state: ProviderPaymentState) -> Observation:
    """A provider's state in domain terms."""
    return Observation(
        status=PaymentStatus(state.status.value),
        amount_authorized_minor=state.amount_authorized_minor,
        amount_captured_minor=state.amount_captured_minor,
        amount_refunded_minor=state.amount_refunded_minor,
        failure_reason=state.failure_reason,
        authorization_expires_at=state.authorization_expires_at,
    )


def event_observation(event: ProviderEvent, status: ProviderStatus) -> Observation:
    """What a webhook event reports, in domain terms."""
    ours = PaymentStatus(status.value)
    return Observation(
        status=ours,
        amount_authorized_minor=event.amount_minor if ours is S.AUTHORIZED else 0,
        amount_captured_minor=event.amount_minor if ours is S.CAPTURED else 0,
        amount_refunded_minor=event.amount_minor
        if ours in (S.PARTIALLY_REFUNDED, S.REFUNDED)
        else 0,
        failure_reason=event.failure_reason,
    )


def _internal_only(caller: Caller) -> None:
    """Money-moving commands are for our services (order, group), never end users."""
    if caller.user_id or not caller.service:
        raise PermissionDeniedError("internal RPC: our services only", reason="INTERNAL_ONLY")


def _now() -> datetime:
    return datetime.now(UTC)


def _nothing() -> None:
    return None


class PaymentHandlers:
    """The payment service's handlers, bound to their dependencies (built once in bootstrap)."""

    def __init__(
        self,
        providers: Mapping[str, PaymentProvider],
        settings: PaymentSettings,
        groups: GroupViews,
        *,
        cache: IntentReplay | None = None,
        compensation_due: Callable[[], None] = _nothing,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.providers = providers
        self.settings = settings
        self._groups = groups
        self._cache = cache
        #: wakes the reconciler after a commit that made compensation (or a re-read) due
        self._compensation_due = compensation_due
        self._clock = clock

    # helpers -----------------------------------------------------------------------------------
    def provider(self, name: str) -> PaymentProvider:
        """The adapter called ``name``; NOT_FOUND when it is not configured."""
        found = self.providers.get(name)
        if found is None:
            raise NotFoundError(f"payment provider {name!r} is not configured", "UNKNOWN_PROVIDER")
        return found

    def _hold_until(self, payment: Payment) -> datetime:
        """When a hold placed now lapses at the payment's provider by its configured window
        (used when the provider reports no lapse time of its own)."""
        window = self.settings.hold_windows.get(payment.provider, DEFAULT_HOLD_WINDOWS["stripe"])
        return self._clock() + window

    def _prepare(self, payment: Payment) -> Payment:
        provider = self.providers.get(payment.provider)
        payment.can_authorize = provider.can_authorize if provider is not None else True
        return payment

    async def _load(
        self, uow: PaymentUnitOfWork, payment_id: str, *, lock: bool, alone: bool = False
    ) -> Payment:
        payment = await uow.payments.get(payment_id, lock=lock, alone=alone)
        if payment is None:
            raise NotFoundError(f"payment {payment_id} not found")
        return self._prepare(payment)

    async def _read(self, uow: PaymentUnitOfWork, payment_id: str) -> Payment:
        """The payment as it stands: one statement, outside any transaction."""
        async with uow:
            return await self._load(uow, payment_id, lock=False, alone=True)

    def _next_check(self, payment: Payment, compensating: bool, checks: int = 0) -> datetime | None:
        """When reconciliation should re-read this payment (None: no need)."""
        if payment.status in TERMINAL:
            return None
        if payment.status in (S.CAPTURED, S.PARTIALLY_REFUNDED) and not compensating:
            return None
        if compensating:
            return self._clock()
        interval = min(
            self.settings.reconcile_interval * 2 ** min(checks, 16),
            self.settings.reconcile_max_interval,
        )
        return self._clock() + timedelta(seconds=interval)

    @staticmethod
    def _provider_failure(exc: ProviderError, what: str) -> Exception:
        if exc.retryable:
            return UnavailableError(f"provider unavailable, could not {what}: {exc}")
        return FailedPreconditionError(
            f"provider refused to {what}: {exc}", reason=f"PROVIDER_{exc.code or 'ERROR'}".upper()
        )

    # create / read -----------------------------------------------------------------------------
    async def create_payment_intent(
        self, cmd: commands.CreatePaymentIntent, uow: PaymentUnitOfWork
    ) -> Payment:
        """The payment for (group, member, attempt), created with its hosted page if new."""
        _internal_only(cmd.caller)
        self.provider(cmd.provider)
        existing: Payment | None = None
        if self._cache is not None:
            payment_id = await self._cache.get(cmd.group_id, cmd.member_id, cmd.attempt)
            if payment_id:
                async with uow:
                    existing = await uow.payments.get(payment_id)
        if existing is None:
            # insert first (a new attempt of an open group is the common case): one statement
            # that commits by itself; an attempt that exists, or a closed group, inserts nothing
            candidate = Payment(
                payment_id=str(uuid.uuid4()),
                group_id=cmd.group_id,
                member_id=cmd.member_id,
                attempt=cmd.attempt,
                amount_minor=cmd.amount_minor,
                currency_code=cmd.currency_code,
                provider=cmd.provider,
                description=cmd.description,
            )
            async with uow:
                added = await uow.payments.add(
                    candidate,
                    return_url=cmd.return_url,
                    payer_user_id=cmd.payer_user_id,
                    check_at=self._clock() + timedelta(seconds=self.settings.reconcile_interval),
                )
                if added:
                    await uow.commit()
            if added:
                existing = candidate
            else:
                async with uow:
                    existing = await uow.payments.get_attempt(
                        cmd.group_id, cmd.member_id, cmd.attempt
                    )
                    if existing is None:
                        closed = await uow.payments.group_closed(cmd.group_id)
                        if closed is not None:
                            raise FailedPreconditionError(
                                f"group {cmd.group_id} is closed ({closed})",
                                reason="GROUP_CLOSED",
                            )
                        # the conflicting row was rolled back
                        raise UnavailableError(  # pragma: no cover
                            "concurrent create did not settle; retry"
                        )
        self._check_same_intent(existing, cmd)
        if not existing.payment_link:
            existing = await self._open_checkout(uow, existing, cmd.return_url)
        if self._cache is not None:
            await self._cache.put(cmd.group_id, cmd.member_id, cmd.attempt, existing.payment_id)
        return existing

    @staticmethod
    def _check_same_intent(payment: Payment, cmd: commands.CreatePaymentIntent) -> None:
        if (payment.amount_minor, payment.currency_code, payment.provider) != (
            cmd.amount_minor,
            cmd.currency_code,
            cmd.provider,
        ):
            raise FailedPreconditionError(
                "this group, member and attempt already have a payment with other parameters",
                reason="INTENT_MISMATCH",
                violations=[FieldViolation("attempt", "use a new attempt number")],
            )

    async def _open_checkout(
        self, uow: PaymentUnitOfWork, payment: Payment, return_url: str
    ) -> Payment:
        provider = self.provider(payment.provider)
        with bind_ids(payment_id=payment.payment_id, group_id=payment.group_id):
            try:
                result = await provider.create_checkout(
                    CheckoutRequest(
                        payment_id=payment.payment_id,
                        group_id=payment.group_id,
                        member_id=payment.member_id,
                        attempt=payment.attempt,
                        amount_minor=payment.amount_minor,
                        currency_code=payment.currency_code,
                        description=payment.description,
                        return_url=return_url,
                        idempotency_key=f"checkout:{payment.payment_id}",
                    )
                )
            except ProviderError as exc:
                raise self._provider_failure(exc, "create the checkout") from exc
            # the hosted page on the payment as we know it, written only if no other create
            # attached one meanwhile (then that one stands): one statement, no lock taken first
            payment.attach_checkout(
                result.provider_payment_id, result.payment_link, result.checkout_id
            )
            if result.authorization_expires_at is not None:
                payment.authorization_expires_at = result.authorization_expires_at
            provider_ids = list(
                dict.fromkeys((result.provider_payment_id, payment.provider_checkout_id))
            )
            async with uow:
                attached = await uow.payments.attach_checkout(payment, provider_ids)
                if attached is not None:
                    await uow.commit()
                    logger.info("payment intent created with %s", attached.provider)
                    return self._prepare(attached)
            return await self._read(uow, payment.payment_id)

    async def get_payment(self, cmd: commands.GetPayment, uow: PaymentUnitOfWork) -> Payment:
        """One payment; NOT_FOUND also when the caller may not see it."""
        payment = await self._read(uow, cmd.payment_id)
        view = await self._groups.view(cmd.caller, payment.group_id)
        if not view.may_see_member(payment.member_id):
            raise NotFoundError("payment not found")
        return payment

    async def list_payments(
        self, cmd: commands.ListPayments, uow: PaymentUnitOfWork
    ) -> tuple[list[Payment], str]:
        """One page of a group's payments the caller may see, oldest first, and the id of the
        last payment the page covered when more follow ("" on the last page). Payments the
        caller may not see are skipped after the read, so a page may hold fewer."""
        view = await self._groups.view(cmd.caller, cmd.group_id)
        async with uow:
            rows = await uow.payments.list_group(
                cmd.group_id, after=cmd.after, limit=cmd.page_size + 1
            )
        found = [self._prepare(p) for p in rows[: cmd.page_size]]
        more = rows[cmd.page_size - 1].payment_id if len(rows) > cmd.page_size else ""
        return [p for p in found if view.may_see_member(p.member_id)], more

    # money movements ---------------------------------------------------------------------------
    async def _apply_state(
        self,
        uow: PaymentUnitOfWork,
        payment_id: str,
        state: ProviderPaymentState,
        *,
        reason: str,
        actor: str,
    ) -> tuple[Payment, bool]:
        """Apply a provider's state under the row lock; (payment, whether it changed)."""
        async with uow:
            payment = await self._load(uow, payment_id, lock=True)
            changed = payment.observe(
                observation(state), reason=reason, actor=actor, hold_until=self._hold_until(payment)
            )
            if (
                state.provider_payment_id
                and state.provider_payment_id != payment.provider_payment_id
            ):
                await uow.payments.map_provider_id(
                    payment.provider, state.provider_payment_id, payment.payment_id
                )
                payment.provider_payment_id = state.provider_payment_id
                changed = True
            if changed:
                await self._after_change(uow, payment)
                await uow.payments.save(payment)
                await uow.commit()
            return payment, changed

    async def _after_change(self, uow: PaymentUnitOfWork, payment: Payment) -> None:
        compensating = bool(await uow.payments.compensate_reason(payment.payment_id))
        compensating = compensating and payment.status in (*MONEY_STATES, S.REQUIRES_ACTION)
        await uow.payments.schedule_check(
            payment.payment_id, self._next_check(payment, compensating), reset=True
        )
        if compensating:
            uow.after_commit(self._compensation_due)

    async def _sync(
        self, uow: PaymentUnitOfWork, payment_id: str, actor: str, read: Payment | None = None
    ) -> tuple[Payment, bool]:
        """Re-read from the provider and apply (``read``: the payment as just read, if it was)."""
        payment = read if read is not None else await self._read(uow, payment_id)
        if not payment.provider_payment_id:
            return payment, False
        try:
            state = await self.provider(payment.provider).fetch(payment.provider_payment_id)
        except ProviderError as exc:
            raise self._provider_failure(exc, "read the payment") from exc
        payment, changed = await self._apply_state(
            uow, payment_id, state, reason="provider re-read", actor=actor
        )
        try:  # e.g. a PayPal order authorized by this very re-read after its checkout closed
            await self._release_late_money(payment, state)
        except ProviderError as exc:
            logger.warning("money on closed checkout %s not released yet: %s", payment_id, exc)
        return payment, changed

    async def sync_payment(
        self, cmd: commands.SyncPayment, uow: PaymentUnitOfWork
    ) -> tuple[Payment, bool]:
        """Re-read the payment from its provider and apply what changed."""
        _internal_only(cmd.caller)
        return await self._sync(uow, cmd.payment_id, cmd.caller.label)

    async def capture_payment(
        self, cmd: commands.CapturePayment, uow: PaymentUnitOfWork
    ) -> Payment:
        """Capture an authorized payment (all of the hold unless an amount is given)."""
        _internal_only(cmd.caller)
        payment_id, actor = cmd.payment_id, cmd.caller.label
        payment = await self._read(uow, payment_id)
        if payment.status is S.REQUIRES_ACTION and payment.provider_payment_id:
            payment, _ = await self._sync(uow, payment_id, actor)  # a late webhook
        if payment.status in (S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED) and (
            cmd.amount_minor is None or cmd.amount_minor == payment.amount_captured_minor
        ):
            return payment
        amount = payment.capture_amount(cmd.amount_minor)
        provider = self.provider(payment.provider)
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.capture(
                    payment.provider_payment_id, amount, f"capture:{payment_id}:{amount}"
                )
            except ProviderError as exc:
                await self._resync_quietly(uow, payment_id, actor)
                raise self._provider_failure(exc, "capture") from exc
            payment, _ = await self._apply_state(
                uow, payment_id, state, reason="capture", actor=actor
            )
        return payment

    async def void_payment(
        self, cmd: commands.VoidPayment, uow: PaymentUnitOfWork, *, current: Payment | None = None
    ) -> Payment:
        """Release a hold (or close an unpaid checkout); ``current`` is the payment as the
        caller just read it (the reconciler), else it is read here."""
        _internal_only(cmd.caller)
        payment_id, actor = cmd.payment_id, cmd.caller.label
        payment = current if current is not None else await self._read(uow, payment_id)
        if payment.status in (S.VOIDED, S.EXPIRED, S.FAILED):
            return payment
        payment.ensure_voidable()
        if not payment.provider_payment_id:
            state = ProviderPaymentState(provider_payment_id="", status=ProviderStatus.EXPIRED)
            payment, _ = await self._apply_state(
                uow, payment_id, state, reason=cmd.reason, actor=actor
            )
            return payment
        provider = self.provider(payment.provider)
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.void(payment.provider_payment_id, f"void:{payment_id}")
            except ProviderError as exc:
                payment = await self._resync_quietly(uow, payment_id, actor)
                if payment.status in (S.VOIDED, S.EXPIRED, S.FAILED):
                    return payment
                raise self._provider_failure(exc, "void") from exc
            payment, _ = await self._apply_state(
                uow, payment_id, state, reason=cmd.reason, actor=actor
            )
        return payment

    async def close_checkout(self, cmd: commands.CloseCheckout, uow: PaymentUnitOfWork) -> Payment:
        """Close the payment's hosted checkout so that it takes no more money (its share is no
        longer wanted): expired at the provider while nobody has paid on it, the payment
        recorded VOIDED. A payment the payer completed first is left as it stands (the caller
        releases it like any payment it does not keep). A failed payment's page is closed too
        (a provider's page may take another card after a decline), and money found on a page
        we had given up on is released at once."""
        _internal_only(cmd.caller)
        payment_id, actor = cmd.payment_id, cmd.caller.label
        payment = await self._read(uow, payment_id)
        if payment.status not in (S.REQUIRES_ACTION, S.FAILED):
            return payment  # money moved, or the checkout is closed already
        if not payment.provider_payment_id:  # no page was made (or it is not recorded yet)
            if payment.status is S.FAILED:
                return payment
            state = ProviderPaymentState(provider_payment_id="", status=ProviderStatus.VOIDED)
            payment, _ = await self._apply_state(
                uow, payment_id, state, reason=cmd.reason, actor=actor
            )
            return payment
        provider = self.provider(payment.provider)
        checkout_id = payment.provider_checkout_id or payment.provider_payment_id
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.expire_checkout(checkout_id, f"expire:{payment_id}")
                await self._release_late_money(payment, state)
            except ProviderError as exc:
                raise self._provider_failure(exc, "close the checkout") from exc
            if state.status is ProviderStatus.REQUIRES_ACTION:
                raise UnavailableError(f"{payment.provider} has not closed the checkout yet")
            if state.status is ProviderStatus.EXPIRED:  # we closed it: nobody's payment failed
                state = replace(state, status=ProviderStatus.VOIDED)
            payment, _ = await self._apply_state(
                uow, payment_id, state, reason=cmd.reason, actor=actor
            )
            logger.info("checkout closed: payment %s", payment.status.value)
        return payment

    async def _release_late_money(self, payment: Payment, state: ProviderPaymentState) -> None:
        """Void (or refund) what the provider holds on a payment we closed or gave up on before
        it ever held money (VOIDED / EXPIRED / FAILED with nothing authorized): a payment that
        raced a closing checkout, which the state machine no longer takes."""
        if payment.status not in (S.VOIDED, S.EXPIRED, S.FAILED) or payment.amount_authorized_minor:
            return
        provider = self.provider(payment.provider)
        key = f"late:{payment.payment_id}"
        if state.status is ProviderStatus.AUTHORIZED:
            logger.warning(
                "%s holds money on closed payment %s: voiding it", provider.name, payment.payment_id
            )
            await provider.void(state.provider_payment_id or payment.provider_payment_id, key)
        elif state.status in (ProviderStatus.CAPTURED, ProviderStatus.PARTIALLY_REFUNDED):
            left = state.amount_captured_minor - state.amount_refunded_minor
            if left <= 0:
                return
            logger.warning(
                "%s captured money on closed payment %s: refunding it",
                provider.name,
                payment.payment_id,
            )
            await provider.refund(
                state.provider_payment_id or payment.provider_payment_id, left, key
            )

    async def refund_payment(
        self,
        cmd: commands.RefundPayment,
        uow: PaymentUnitOfWork,
        *,
        current: Payment | None = None,
    ) -> Payment:
        """Refund captured money (everything left unless an amount is given); ``current`` is
        the payment as the caller just read it (the reconciler), else it is read here."""
        _internal_only(cmd.caller)
        payment_id, actor = cmd.payment_id, cmd.caller.label
        payment = current if current is not None else await self._read(uow, payment_id)
        if payment.status is S.REFUNDED and cmd.amount_minor is None:
            return payment
        amount = payment.refund_amount(cmd.amount_minor)
        provider = self.provider(payment.provider)
        suffix = cmd.key or f"{payment.amount_refunded_minor}:{amount}"
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.refund(
                    payment.provider_payment_id, amount, f"refund:{payment_id}:{suffix}"
                )
            except ProviderError as exc:
                await self._resync_quietly(uow, payment_id, actor)
                raise self._provider_failure(exc, "refund") from exc
            payment, _ = await self._apply_state(
                uow, payment_id, state, reason=cmd.reason or "refund", actor=actor
            )
        return payment

    async def _resync_quietly(self, uow: PaymentUnitOfWork, payment_id: str, actor: str) -> Payment:
        try:
            payment, _ = await self._sync(uow, payment_id, actor)
        except Exception as exc:
            logger.warning("re-read of %s after a failed call failed: %s", payment_id, exc)
            payment = await self._read(uow, payment_id)
        return payment

    # webhooks ----------------------------------------------------------------------------------
    def webhook_provider(self, name: str) -> tuple[str, PaymentProvider]:
        """The adapter a webhook path names ("" means the Stripe-compatible default)."""
        name = name.strip().lower()
        if not name:
            name = "stripe" if "stripe" in self.providers else "sandbox"
        return name, self.provider(name)

    async def handle_webhook(
        self, cmd: commands.HandleWebhook, uow: PaymentUnitOfWork
    ) -> WebhookResult:
        """Verify, parse, match to our payment, store once, and move the payment forward."""
        name, provider = self.webhook_provider(cmd.provider)
        request = WebhookRequest(
            method="POST",
            path=f"/payments/webhook/{name}",
            headers={k.lower(): v for k, v in cmd.headers.items()},
            body=cmd.body,
        )
        WEBHOOKS_RECEIVED.labels(name).inc()
        try:
            await provider.verify_webhook(request)
        except WebhookVerificationError as exc:
            WEBHOOK_VERIFICATION_FAILURES.labels(name).inc()
            logger.warning("%s webhook rejected: %s", name, exc)
            raise UnauthenticatedError(f"webhook verification failed: {exc}") from exc
        try:
            event = provider.parse_event(request)
        except WebhookVerificationError as exc:
            await self._record_malformed(uow, name, cmd.body, str(exc))
            raise InvalidArgumentError(f"malformed webhook: {exc}") from exc
        body = cmd.body.decode("utf-8", errors="replace")
        async with uow:
            received = await uow.payments.receive_webhook(
                name,
                event.event_id,
                event.event_type,
                event.provider_payment_id,
                body,
                event.provider_ids,
            )
            if received is None:
                return WebhookResult(event.event_id, duplicate=True)
            found = await self._match(uow, name, event, received)
            if isinstance(found, WebhookMatch):
                await self._settle(uow, name, provider, event, found, received.locked)
                return WebhookResult(event.event_id, duplicate=False)
        # An id new to us: the provider decides, asked outside any transaction (the event was
        # not stored: a redelivery meanwhile is handled like this one).
        match = await self._confirm(provider, found)
        async with uow:
            if not await uow.payments.record_webhook(
                name, event.event_id, event.event_type, event.provider_payment_id, body
            ):
                return WebhookResult(event.event_id, duplicate=True)
            await self._settle(uow, name, provider, event, match, None)
        return WebhookResult(event.event_id, duplicate=False)

    async def _settle(
        self,
        uow: PaymentUnitOfWork,
        name: str,
        provider: PaymentProvider,
        event: ProviderEvent,
        match: WebhookMatch,
        locked: Payment | None,
    ) -> None:
        """Apply a stored event to the payment it matched (``locked`` when already loaded
        under the row lock), record the outcome, commit."""
        payment_id = match.payment_id
        if payment_id is None or event.status is None:
            outcome = match.outcome if payment_id is None else "ignored"
            await uow.payments.webhook_outcome(
                name, event.event_id, outcome, payment_id, detail=match.detail
            )
            if payment_id is not None:
                # an event with no state of its own says "look again" (PayPal's
                # CHECKOUT.ORDER.APPROVED: the order is authorized by re-reading it): the
                # reconciler re-reads the payment now, not at its next scheduled check
                await uow.payments.schedule_check(payment_id, self._clock(), reset=True)
                uow.after_commit(self._compensation_due)
            await uow.commit()
            if outcome == "mismatch":
                logger.warning("%s webhook %s ignored: %s", name, event.event_id, match.detail)
            return
        with bind_ids(payment_id=payment_id):
            if locked is not None and locked.payment_id == payment_id:
                payment = self._prepare(locked)
            else:
                payment = await self._load(uow, payment_id, lock=True)
            for provider_id in match.new_ids:
                await uow.payments.map_provider_id(name, provider_id, payment_id)
            outcome = await self._apply_event(uow, name, provider, payment, event)
        await uow.payments.webhook_outcome(
            name, event.event_id, outcome, payment_id, detail=match.detail
        )
        await uow.commit()
        logger.info("webhook %s (%s): %s", event.event_id, event.event_type, outcome)

    async def _record_malformed(
        self, uow: PaymentUnitOfWork, name: str, body: bytes, why: str
    ) -> None:
        """Leave a trace an operator can find (webhook_events, outcome "malformed", keyed by a
        hash of the body, which itself is not stored) and a warning; never fails the call."""
        digest = hashlib.sha256(body).hexdigest()
        event_id = f"malformed:sha256:{digest}"
        logger.warning(
            "%s webhook refused as malformed (%d bytes, sha256 %s): %s",
            name,
            len(body),
            digest,
            why,
        )
        try:
            async with uow:
                if await uow.payments.record_webhook(name, event_id, "", "", ""):
                    await uow.payments.webhook_outcome(
                        name, event_id, "malformed", None, detail=f"{why} ({len(body)} bytes)"
                    )
                    await uow.commit()
        except Exception as exc:  # the refusal stands even when it cannot be recorded
            logger.warning("could not record the malformed %s webhook: %s", name, exc)

    async def _match(
        self,
        uow: PaymentUnitOfWork,
        name: str,
        event: ProviderEvent,
        received: ReceivedWebhook,
    ) -> WebhookMatch | _Claim:
        """Which of our payments the event is about, decided by provider ids only (see the
        module docstring): a match, or the payment its new ids claim, whose checkout the
        provider must list them on (:meth:`_confirm`)."""
        ids = event.provider_ids
        known = received.known
        claimed: Payment | None = None
        why = ""
        owners = sorted(set(known.values()))
        if len(owners) > 1:
            return WebhookMatch(None, "mismatch", detail=f"names provider ids of payments {owners}")
        unknown = tuple(i for i in ids if i not in known)
        if owners:
            if not unknown or event.status is None:
                return WebhookMatch(owners[0])
            claimed = received.locked
            if claimed is None or claimed.payment_id != owners[0]:  # pragma: no cover
                claimed = await uow.payments.get(owners[0])
            why = f"{', '.join(unknown)} new next to ids of payment {owners[0]}"
        elif event.merchant_reference and _is_uuid(event.merchant_reference):
            if event.status is None:
                return WebhookMatch(None, "unmatched")
            claimed = await uow.payments.get(event.merchant_reference)
            if claimed is not None and claimed.provider != name:
                claimed = None
            why = f"{', '.join(unknown) or 'no id'} claims payment {event.merchant_reference}"
        if claimed is None:
            return WebhookMatch(None, "unmatched")
        checkout_id = claimed.provider_checkout_id
        if not checkout_id:  # its checkout is not recorded yet: reconciliation will catch up
            return WebhookMatch(None, "unmatched", detail=f"{why}, which has no checkout yet")
        return _Claim(claimed.payment_id, checkout_id, unknown, why)

    @staticmethod
    async def _confirm(provider: PaymentProvider, claim: _Claim) -> WebhookMatch:
        """Whether the provider lists the claim's new ids on the claimed payment's checkout."""
        checkout_id, unknown, why = claim.checkout_id, claim.unknown, claim.why
        try:
            belonging = await provider.checkout_ids(checkout_id)
        except ProviderError as exc:
            if exc.retryable:  # the provider redelivers; nothing was recorded
                raise UnavailableError(f"could not re-read the provider: {exc}") from exc
            return WebhookMatch(
                None, "mismatch", detail=f"{why}; re-reading checkout {checkout_id} failed: {exc}"
            )
        if unknown and all(i in belonging for i in unknown):
            return WebhookMatch(
                claim.payment_id,
                new_ids=unknown,
                detail=f"{', '.join(unknown)} confirmed on checkout {checkout_id}",
            )
        return WebhookMatch(
            None,
            "mismatch",
            detail=f"{why}, but the provider does not list it on checkout {checkout_id}",
        )

    async def _apply_event(
        self,
        uow: PaymentUnitOfWork,
        name: str,
        provider: PaymentProvider,
        payment: Payment,
        event: ProviderEvent,
    ) -> str:
        """Move the (locked) payment as the event says; the webhook's outcome."""
        assert event.status is not None
        reported = PaymentStatus(event.status.value)
        order = ordering(payment.status, reported, can_authorize=payment.can_authorize)
        if order == "stale" and not (
            reported is S.PARTIALLY_REFUNDED
            and event.amount_minor > payment.amount_refunded_minor
            and payment.status is S.PARTIALLY_REFUNDED
        ):
            return "stale"
        reason = f"webhook {event.event_type}"
        if order == "ahead":
            # Out of order: the provider's current state decides, not this event (read through
            # the id we hold, which every adapter resolves; an event's id may be a capture's).
            try:
                state = await provider.fetch(
                    payment.provider_payment_id or event.provider_payment_id
                )
            except ProviderError as exc:
                raise UnavailableError(f"could not re-read the provider: {exc}") from exc
            seen = observation(state)
            outcome = "refetched"
        else:
            seen = event_observation(event, event.status)
            outcome = "applied"
        if not payment.observe(
            seen, reason=reason, actor=f"provider:{name}", hold_until=self._hold_until(payment)
        ):
            return "unchanged"
        await self._after_change(uow, payment)
        await uow.payments.save(payment)
        return outcome

    # reconciliation ----------------------------------------------------------------------------
    async def claim_due_payments(
        self, cmd: commands.ClaimDuePayments, uow: PaymentUnitOfWork
    ) -> list[str]:
        """Payments due for a check, their next check pushed out (backing off per check)."""
        settings = self.settings
        async with uow:
            due = await uow.payments.claim_due(cmd.limit, [s.value for s in WATCHED])
            for payment_id, checks in due:
                delay = min(
                    settings.reconcile_interval * 2 ** min(checks + 1, 16),
                    settings.reconcile_max_interval,
                )
                await uow.payments.bump_check(payment_id, self._clock() + timedelta(seconds=delay))
            if due:  # an idle round commits nothing
                await uow.commit()
        return [payment_id for payment_id, _ in due]

    async def reconcile_payment(
        self, cmd: commands.ReconcilePayment, uow: PaymentUnitOfWork
    ) -> None:
        """Compensate a payment of a closed group, or re-read it from its provider."""
        payment_id = cmd.payment_id
        async with uow:  # one read: the payment and why its money must go back, if it must
            payment = await self._load(uow, payment_id, lock=False, alone=True)
            reason = await uow.payments.compensate_reason(payment_id)  # read with the payment
        payment, changed = await self._sync(uow, payment_id, RECONCILER.label, payment)
        if changed:
            logger.info("reconciliation repaired %s: now %s", payment_id, payment.status.value)
        if not reason:
            return
        if payment.status in (S.AUTHORIZED, S.REQUIRES_ACTION):
            payment = await self.void_payment(
                commands.VoidPayment(RECONCILER, payment_id, reason), uow, current=payment
            )
            logger.info("voided %s of closed group %s", payment_id, payment.group_id)
        elif payment.status in (S.CAPTURED, S.PARTIALLY_REFUNDED):
            payment = await self.refund_payment(
                commands.RefundPayment(RECONCILER, payment_id, None, reason, key="compensation"),
                uow,
                current=payment,
            )
            logger.info("refunded %s of closed group %s", payment_id, payment.group_id)

    async def warn_expiring_authorizations(
        self, cmd: commands.WarnExpiringAuthorizations, uow: PaymentUnitOfWork
    ) -> int:
        """payment.authorization_expiring for holds that lapse within the warning window."""
        horizon = self._clock() + timedelta(seconds=self.settings.authorization_warning_seconds)
        warned = 0
        async with uow:
            for payment_id in await uow.payments.expiring(horizon, cmd.limit):
                payment = await uow.payments.get(payment_id)
                if payment is None:
                    continue
                payment.warn_authorization_expiring()
                await uow.payments.mark_warned(payment_id)
                warned += 1
                logger.warning("authorization of %s lapses soon", payment_id)
            if warned:
                await uow.commit()
        return warned

    # events ------------------------------------------------------------------------------------
    async def group_closed(self, message: GroupClosed, uow: PaymentUnitOfWork) -> None:
        """group.expired, group.cancelled, order.failed: every hold of the group is to be
        voided and every capture refunded. Recorded here (in the inbox transaction the consumer
        opened); the reconciler, woken after the commit, talks to the providers."""
        subject = uow.event.event_type if uow.event is not None else subject_of(type(message))
        if isinstance(message, order_events_pb2.OrderFailed):
            why = message.detail
        else:
            why = message.reason
        reason = f"{subject}: {why}" if why else subject
        with bind_ids(group_id=message.group_id):
            await uow.payments.close_group(message.group_id, reason)
            await uow.payments.compensate(list(message.payment_ids), reason)
            logger.info("group closed (%s): holds will be voided, captures refunded", reason)
        uow.after_commit(self._compensation_due)
