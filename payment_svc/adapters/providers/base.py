"""The one interface every payment provider adapter implements.

Modelled as small, separately testable steps (STYLE.md, hyperswitch): money flows are one
method each (checkout, capture, void, refund, fetch); an incoming webhook goes through
`verify_webhook` (which header, which bytes, check the signature) and `parse_event` (which
provider object it names and which of our states it maps to). A webhook arrives as one value,
`WebhookRequest`, holding the method, path, headers and raw body untouched.

Which of our payments a webhook is about is decided by the service from provider ids it
recorded (`CheckoutResult`) and, for an id it has not seen yet, by asking the provider which ids
belong to the checkout it created (`checkout_ids`). The reference an event echoes back
(`ProviderEvent.merchant_reference`: metadata, notes, custom ids) only says which checkout to
ask about; it is never trusted on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class ProviderError(Exception):
    """A provider call failed; `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


class WebhookVerificationError(Exception):
    """The webhook's signature, timestamp or shape is not acceptable; nothing may change.

    Raised by `verify_webhook` (not authentic or not fresh) and by `parse_event` (authentic but
    malformed)."""


class ProviderStatus(enum.Enum):
    """A provider's payment state, in our vocabulary. States only move forward."""

    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    VOIDED = "voided"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class WebhookRequest:
    """An incoming webhook exactly as received: header names lower-cased, body raw bytes."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class CheckoutRequest:
    """Ask the provider for a hosted payment page that authorizes `amount_minor`."""

    payment_id: str
    group_id: str
    member_id: str
    attempt: int
    amount_minor: int
    currency_code: str
    description: str
    return_url: str
    #: sent as the provider's idempotency key, so a retried call creates nothing twice
    idempotency_key: str


@dataclass(frozen=True)
class CheckoutResult:
    """The provider's id for the payment and the page the payer opens.

    `checkout_id` names the checkout we created (Stripe's Checkout Session, Razorpay's payment
    link, PayPal's order); it is what `checkout_ids` is later asked about. Empty means it is
    `provider_payment_id` itself."""

    provider_payment_id: str
    payment_link: str
    authorization_expires_at: datetime | None = None
    checkout_id: str = ""


@dataclass(frozen=True)
class ProviderPaymentState:
    """What the provider says about one payment right now."""

    provider_payment_id: str
    status: ProviderStatus
    amount_authorized_minor: int = 0
    amount_captured_minor: int = 0
    amount_refunded_minor: int = 0
    failure_reason: str = ""
    authorization_expires_at: datetime | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook, parsed: its id (for de-duplication) and what it says."""

    event_id: str
    event_type: str
    provider_payment_id: str
    #: the state the event reports, or None for events that move no payment
    status: ProviderStatus | None
    amount_minor: int = 0
    failure_reason: str = ""
    created_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: our payment_id as the provider echoes it back (metadata / notes / reference id), when
    #: it does. Never enough on its own: it only names the checkout the service then asks the
    #: provider about (`PaymentProvider.checkout_ids`) when the event's ids are new to it
    merchant_reference: str = ""
    #: further provider ids the event names that belong to the same payment (e.g. a Checkout
    #: Session's id next to its PaymentIntent's); each must be ours or proven ours
    other_ids: tuple[str, ...] = ()

    @property
    def provider_ids(self) -> tuple[str, ...]:
        """Every provider id the event names, main one first, without blanks or repeats."""
        return tuple(dict.fromkeys(i for i in (self.provider_payment_id, *self.other_ids) if i))


class PaymentProvider(Protocol):
    """One payment service provider."""

    #: name used in webhook paths and storage: "sandbox", "stripe", "razorpay", "paypal"
    name: str
    #: False where the provider cannot hold funds: it captures at once and we refund instead
    can_authorize: bool

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        """Create the payment and its hosted page (idempotent on request.idempotency_key)."""

    async def capture(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        """Capture an authorization."""

    async def void(self, provider_payment_id: str, idempotency_key: str) -> ProviderPaymentState:
        """Release an authorization."""

    async def refund(
        self, provider_payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPaymentState:
        """Refund captured money."""

    async def fetch(self, provider_payment_id: str) -> ProviderPaymentState:
        """Re-read the payment's state (reconciliation, out-of-order webhooks)."""

    async def checkout_ids(self, checkout_id: str) -> frozenset[str]:
        """Re-read the checkout we created (`CheckoutResult.checkout_id`) from the provider:
        the provider ids that belong to it (itself and the payment objects made on it).
        Raises ProviderError when the provider cannot tell."""

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderPaymentState:
        """Close the checkout we created (`CheckoutResult.checkout_id`, or the provider payment
        id where none was recorded) if nobody has paid on it, so its hosted page takes no more
        money, and report the payment as it stands then: VOIDED / EXPIRED / FAILED when it
        closed unpaid, AUTHORIZED or later when the payer completed it first (left as it is:
        the caller decides). Never places or releases a hold itself. REQUIRES_ACTION means
        the provider could not close it yet."""

    async def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise WebhookVerificationError unless the request is authentic and fresh."""

    def parse_event(self, request: WebhookRequest) -> ProviderEvent:
        """The verified request as a ProviderEvent (raises WebhookVerificationError if
        malformed)."""
