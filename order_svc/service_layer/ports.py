"""What the saga needs from the outside world: a merchant backend and the payment service.

Adapters implement these (adapters/merchant_http.py, adapters/payments_grpc.py); tests and
other merchants can supply their own. Errors say whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from order_svc.domain.model import FailureReason, Line
from order_svc.domain.validator import CatalogueItem


class MerchantRefusedError(Exception):
    """The merchant answered and said no (retrying the same request cannot help)."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MerchantUnavailableError(Exception):
    """The merchant did not answer usefully within the retry budget (timeouts, 5xx)."""


@dataclass(frozen=True)
class Placement:
    """The merchant's record of our order."""

    merchant_order_id: str
    status: str


class MerchantClient(Protocol):
    """A merchant backend. Every mutating call carries an idempotency key."""

    async def catalogue(self) -> Mapping[str, CatalogueItem]:
        """The merchant's current catalogue, by SKU."""
        ...

    async def reserve(
        self, *, reference: str, lines: Sequence[Line], currency: str, idempotency_key: str
    ) -> str:
        """Hold stock for the order; returns the reservation id."""
        ...

    async def place(
        self,
        *,
        reference: str,
        reservation_id: str,
        total_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> Placement:
        """Turn the reservation into an order."""
        ...

    async def cancel(self, *, reference: str, idempotency_key: str) -> str:
        """Cancel whatever the merchant holds for `reference` (order and/or reservation);
        returns what it did ("cancelled", "released", "nothing")."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MerchantDirectory(Protocol):
    """Finds the client for a merchant id."""

    def client_for(self, merchant_id: str) -> MerchantClient:
        """The backend serving `merchant_id`."""
        ...


class PaymentRefusedError(Exception):
    """The payment service refused the operation for good (declined, wrong state)."""


class PaymentUnavailableError(Exception):
    """The payment service could not be reached or failed transiently."""


@dataclass(frozen=True)
class PaymentState:
    """What the payment service says about one payment after an operation."""

    payment_id: str
    status: str  # PaymentStatus name without prefix, e.g. "CAPTURED"
    captured_minor: int = 0
    refunded_minor: int = 0


class PaymentGateway(Protocol):
    """The payment service's money-moving RPCs, each idempotent by key."""

    async def capture(
        self, payment_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        """Capture the authorized share."""
        ...

    async def void(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        """Release the hold."""
        ...

    async def refund(self, payment_id: str, reason: str, idempotency_key: str) -> PaymentState:
        """Refund everything captured."""
        ...

    async def get(self, payment_id: str) -> PaymentState:
        """Re-read the payment."""
        ...

    async def close(self) -> None:
        """Release the channel."""
        ...
