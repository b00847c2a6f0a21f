"""Handlers of the payment service: create, read, capture, void, refund, sync, webhooks.

Provider calls never run while a payment row is locked, except when a webhook arrives out of
order and the provider must be re-read to decide. Each money movement is: read and check in
one transaction, call the provider with a stable idempotency key (the adapter retries with the
same key), then apply what the provider reports in a second transaction that locks the row and
moves the state only forward, so concurrent or repeated calls end in one outcome.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.platform.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from mppo.platform.logs import bind_ids
from payment_svc.adapters.cache import IntentCache
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
from payment_svc.config import PaymentSettings
from payment_svc.domain.model import (
    MONEY_STATES,
    TERMINAL,
    Observation,
    Payment,
    PaymentStatus,
    ordering,
)
from payment_svc.service_layer.unit_of_work import PaymentUnitOfWork

logger = logging.getLogger(__name__)

S = PaymentStatus


@dataclass(frozen=True)
class NewIntent:
    """CreatePaymentIntent, validated."""

    group_id: str
    member_id: str
    attempt: int
    amount_minor: int
    currency_code: str
    provider: str
    description: str
    return_url: str
    payer_user_id: str


@dataclass(frozen=True)
class WebhookResult:
    """What HandleWebhook answers."""

    event_id: str
    duplicate: bool


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


class PaymentService:
    """The payment service's use cases."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        providers: Mapping[str, PaymentProvider],
        settings: PaymentSettings,
        cache: IntentCache | None = None,
    ) -> None:
        self._sessions = sessions
        self.providers = providers
        self.settings = settings
        self._cache = cache
        #: called after a commit that made work for the reconciler (compensation due)
        self.on_compensation_due: Callable[[], None] = lambda: None

    def uow(self) -> PaymentUnitOfWork:
        """A new unit of work."""
        return PaymentUnitOfWork(self._sessions)

    def provider(self, name: str) -> PaymentProvider:
        """The adapter called ``name``; NOT_FOUND when it is not configured."""
        found = self.providers.get(name)
        if found is None:
            raise NotFoundError(f"payment provider {name!r} is not configured", "UNKNOWN_PROVIDER")
        return found

    def _prepare(self, payment: Payment) -> Payment:
        provider = self.providers.get(payment.provider)
        payment.can_authorize = provider.can_authorize if provider is not None else True
        return payment

    async def _load(self, uow: PaymentUnitOfWork, payment_id: str, *, lock: bool) -> Payment:
        payment = await uow.payments.get(payment_id, lock=lock)
        if payment is None:
            raise NotFoundError(f"payment {payment_id} not found")
        return self._prepare(payment)

    def _next_check(self, payment: Payment, compensating: bool, checks: int = 0) -> datetime | None:
        """When reconciliation should re-read this payment (None: no need)."""
        if payment.status in TERMINAL:
            return None
        if payment.status in (S.CAPTURED, S.PARTIALLY_REFUNDED) and not compensating:
            return None
        if compensating:
            return datetime.now(UTC)
        interval = min(
            self.settings.reconcile_interval * 2 ** min(checks, 16),
            self.settings.reconcile_max_interval,
        )
        return datetime.now(UTC) + timedelta(seconds=interval)

    # create / read ---------------------------------------------------------------------------
    async def create_intent(self, intent: NewIntent) -> Payment:
        """The payment for (group, member, attempt), created with its hosted page if new."""
        self.provider(intent.provider)
        payment_id = None
        if self._cache is not None:
            payment_id = await self._cache.get(intent.group_id, intent.member_id, intent.attempt)
        async with self.uow() as uow:
            existing = await uow.payments.get(payment_id) if payment_id else None
            if existing is None:
                existing = await uow.payments.get_attempt(
                    intent.group_id, intent.member_id, intent.attempt
                )
            if existing is None:
                closed = await uow.payments.group_closed(intent.group_id)
                if closed is not None:
                    raise FailedPreconditionError(
                        f"group {intent.group_id} is closed ({closed})", reason="GROUP_CLOSED"
                    )
                candidate = Payment(
                    payment_id=str(uuid.uuid4()),
                    group_id=intent.group_id,
                    member_id=intent.member_id,
                    attempt=intent.attempt,
                    amount_minor=intent.amount_minor,
                    currency_code=intent.currency_code,
                    provider=intent.provider,
                    description=intent.description,
                )
                if await uow.payments.add(
                    candidate, return_url=intent.return_url, payer_user_id=intent.payer_user_id
                ):
                    await uow.payments.schedule_check(
                        candidate.payment_id,
                        datetime.now(UTC) + timedelta(seconds=self.settings.reconcile_interval),
                        reset=True,
                    )
                    await uow.commit()
                    existing = candidate
                else:
                    existing = await uow.payments.get_attempt(
                        intent.group_id, intent.member_id, intent.attempt
                    )
            if existing is None:  # pragma: no cover - the conflicting row was rolled back
                raise UnavailableError("concurrent create did not settle; retry")
        self._check_same_intent(existing, intent)
        if not existing.payment_link:
            existing = await self._open_checkout(existing, intent.return_url)
        if self._cache is not None:
            await self._cache.put(
                intent.group_id, intent.member_id, intent.attempt, existing.payment_id
            )
        return existing

    @staticmethod
    def _check_same_intent(payment: Payment, intent: NewIntent) -> None:
        if (payment.amount_minor, payment.currency_code, payment.provider) != (
            intent.amount_minor,
            intent.currency_code,
            intent.provider,
        ):
            raise FailedPreconditionError(
                "this group, member and attempt already have a payment with other parameters",
                reason="INTENT_MISMATCH",
                violations=[FieldViolation("attempt", "use a new attempt number")],
            )

    async def _open_checkout(self, payment: Payment, return_url: str) -> Payment:
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
            async with self.uow() as uow:
                locked = await self._load(uow, payment.payment_id, lock=True)
                if not locked.payment_link:
                    locked.attach_checkout(result.provider_payment_id, result.payment_link)
                    if result.authorization_expires_at is not None:
                        locked.authorization_expires_at = result.authorization_expires_at
                    await uow.payments.map_provider_id(
                        locked.provider, result.provider_payment_id, locked.payment_id
                    )
                    await uow.payments.save(locked)
                    await uow.commit()
                    logger.info("payment intent created with %s", locked.provider)
            return locked

    async def get(self, payment_id: str) -> Payment:
        """One payment."""
        async with self.uow() as uow:
            return await self._load(uow, payment_id, lock=False)

    async def list_group(self, group_id: str) -> list[Payment]:
        """A group's payments."""
        async with self.uow() as uow:
            return [self._prepare(p) for p in await uow.payments.list_group(group_id)]

    # money movements -------------------------------------------------------------------------
    @staticmethod
    def _provider_failure(exc: ProviderError, what: str) -> Exception:
        if exc.retryable:
            return UnavailableError(f"provider unavailable, could not {what}: {exc}")
        return FailedPreconditionError(
            f"provider refused to {what}: {exc}", reason=f"PROVIDER_{exc.code or 'ERROR'}".upper()
        )

    async def apply_state(
        self, payment_id: str, state: ProviderPaymentState, *, reason: str, actor: str
    ) -> tuple[Payment, bool]:
        """Apply a provider's state under the row lock; (payment, whether it changed)."""
        async with self.uow() as uow:
            payment = await self._load(uow, payment_id, lock=True)
            changed = payment.observe(observation(state), reason=reason, actor=actor)
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
            self.on_compensation_due()

    async def sync(self, payment_id: str, *, actor: str = "reconciler") -> tuple[Payment, bool]:
        """Re-read the payment from its provider and apply what changed."""
        payment = await self.get(payment_id)
        if not payment.provider_payment_id:
            return payment, False
        try:
            state = await self.provider(payment.provider).fetch(payment.provider_payment_id)
        except ProviderError as exc:
            raise self._provider_failure(exc, "read the payment") from exc
        return await self.apply_state(payment_id, state, reason="provider re-read", actor=actor)

    async def capture(self, payment_id: str, amount_minor: int | None, actor: str) -> Payment:
        """Capture an authorized payment (all of the hold unless an amount is given)."""
        payment = await self.get(payment_id)
        if payment.status is S.REQUIRES_ACTION and payment.provider_payment_id:
            payment, _ = await self.sync(payment_id, actor=actor)  # a late webhook
        if payment.status in (S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED) and (
            amount_minor is None or amount_minor == payment.amount_captured_minor
        ):
            return payment
        amount = payment.capture_amount(amount_minor)
        provider = self.provider(payment.provider)
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.capture(
                    payment.provider_payment_id, amount, f"capture:{payment_id}:{amount}"
                )
            except ProviderError as exc:
                await self._resync_quietly(payment_id, actor)
                raise self._provider_failure(exc, "capture") from exc
            payment, _ = await self.apply_state(payment_id, state, reason="capture", actor=actor)
        return payment

    async def void(self, payment_id: str, reason: str, actor: str) -> Payment:
        """Release a hold (or close an unpaid checkout)."""
        payment = await self.get(payment_id)
        if payment.status in (S.VOIDED, S.EXPIRED, S.FAILED):
            return payment
        payment.ensure_voidable()
        if not payment.provider_payment_id:
            state = ProviderPaymentState(provider_payment_id="", status=ProviderStatus.EXPIRED)
            payment, _ = await self.apply_state(payment_id, state, reason=reason, actor=actor)
            return payment
        provider = self.provider(payment.provider)
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.void(payment.provider_payment_id, f"void:{payment_id}")
            except ProviderError as exc:
                payment = await self._resync_quietly(payment_id, actor)
                if payment.status in (S.VOIDED, S.EXPIRED, S.FAILED):
                    return payment
                raise self._provider_failure(exc, "void") from exc
            payment, _ = await self.apply_state(payment_id, state, reason=reason, actor=actor)
        return payment

    async def refund(
        self, payment_id: str, amount_minor: int | None, reason: str, actor: str, key: str = ""
    ) -> Payment:
        """Refund captured money (everything left unless an amount is given)."""
        payment = await self.get(payment_id)
        if payment.status is S.REFUNDED and amount_minor is None:
            return payment
        amount = payment.refund_amount(amount_minor)
        provider = self.provider(payment.provider)
        suffix = key or f"{payment.amount_refunded_minor}:{amount}"
        with bind_ids(payment_id=payment_id, group_id=payment.group_id):
            try:
                state = await provider.refund(
                    payment.provider_payment_id, amount, f"refund:{payment_id}:{suffix}"
                )
            except ProviderError as exc:
                await self._resync_quietly(payment_id, actor)
                raise self._provider_failure(exc, "refund") from exc
            payment, _ = await self.apply_state(
                payment_id, state, reason=reason or "refund", actor=actor
            )
        return payment

    async def _resync_quietly(self, payment_id: str, actor: str) -> Payment:
        try:
            payment, _ = await self.sync(payment_id, actor=actor)
        except Exception as exc:
            logger.warning("re-read of %s after a failed call failed: %s", payment_id, exc)
            payment = await self.get(payment_id)
        return payment

    # webhooks -------------------------------------------------------------------------------
    def webhook_provider(self, name: str) -> tuple[str, PaymentProvider]:
        """The adapter a webhook path names ("" means the Stripe-compatible default)."""
        name = name.strip().lower()
        if not name:
            name = "stripe" if "stripe" in self.providers else "sandbox"
        return name, self.provider(name)

    async def handle_webhook(
        self, provider_name: str, headers: Mapping[str, str], body: bytes
    ) -> WebhookResult:
        """Verify, store once, map, and move the payment forward."""
        name, provider = self.webhook_provider(provider_name)
        request = WebhookRequest(
            method="POST",
            path=f"/payments/webhook/{name}",
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
        )
        try:
            await provider.verify_webhook(request)
        except WebhookVerificationError as exc:
            logger.warning("%s webhook rejected: %s", name, exc)
            raise UnauthenticatedError(f"webhook verification failed: {exc}") from exc
        try:
            event = provider.parse_event(request)
        except WebhookVerificationError as exc:
            raise InvalidArgumentError(f"malformed webhook: {exc}") from exc
        async with self.uow() as uow:
            fresh = await uow.payments.record_webhook(
                name,
                event.event_id,
                event.event_type,
                event.provider_payment_id,
                body.decode("utf-8", errors="replace"),
            )
            if not fresh:
                return WebhookResult(event.event_id, duplicate=True)
            payment_id = await self._resolve(uow, name, event)
            if payment_id is None or event.status is None:
                outcome = "unmatched" if payment_id is None else "ignored"
                await uow.payments.webhook_outcome(name, event.event_id, outcome, payment_id)
                await uow.commit()
                return WebhookResult(event.event_id, duplicate=False)
            with bind_ids(payment_id=payment_id):
                outcome = await self._apply_event(uow, name, provider, payment_id, event)
            await uow.payments.webhook_outcome(name, event.event_id, outcome, payment_id)
            await uow.commit()
            logger.info("webhook %s (%s): %s", event.event_id, event.event_type, outcome)
        return WebhookResult(event.event_id, duplicate=False)

    async def _resolve(self, uow: PaymentUnitOfWork, name: str, event: ProviderEvent) -> str | None:
        if event.provider_payment_id:
            found = await uow.payments.find_by_provider_id(name, event.provider_payment_id)
            if found is not None:
                return found
        if event.merchant_reference:
            try:
                uuid.UUID(event.merchant_reference)
            except ValueError:
                return None
            payment = await uow.payments.get(event.merchant_reference)
            if payment is not None and payment.provider == name:
                return payment.payment_id
        return None

    async def _apply_event(
        self,
        uow: PaymentUnitOfWork,
        name: str,
        provider: PaymentProvider,
        payment_id: str,
        event: ProviderEvent,
    ) -> str:
        assert event.status is not None
        payment = await self._load(uow, payment_id, lock=True)
        if event.provider_payment_id != payment.provider_payment_id:
            # (the mapping of the id we already hold was written when we learnt it)
            await uow.payments.map_provider_id(name, event.provider_payment_id, payment_id)
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
            # Out of order: the provider's current state decides, not this event.
            try:
                state = await provider.fetch(
                    event.provider_payment_id or payment.provider_payment_id
                )
            except ProviderError as exc:
                raise UnavailableError(f"could not re-read the provider: {exc}") from exc
            seen = observation(state)
            outcome = "refetched"
        else:
            seen = event_observation(event, event.status)
            outcome = "applied"
        if not payment.observe(seen, reason=reason, actor=f"provider:{name}"):
            return "unchanged"
        await self._after_change(uow, payment)
        await uow.payments.save(payment)
        return outcome
