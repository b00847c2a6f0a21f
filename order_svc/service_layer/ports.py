"""What the service layer needs from the outside world: its orders (the repository), a
merchant backend, the payment service, the group service's view of who may read an order, a
per-order lock and a cache of finished orders.

Adapters implement these (adapters/repository.py, adapters/merchant_http.py,
adapters/payment_gateway.py, adapters/redis_aids.py, mppo.clients.group.GroupClient); unit
tests and other merchants supply their own. Errors say whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mppo.clients.group import GroupView
from mppo.platform.identity import Caller
from order_svc.domain.model import FailureReason, Line, Order
from order_svc.domain.validator import CatalogueItem


class Orders(Protocol):
    """The orders of one unit of work (one transaction).

    Every order it hands out or stores is tracked by the unit of work, whose commit publishes
    the events the order recorded.
    """

    async def add_if_absent(self, order: Order) -> str:
        """Store `order` unless its group has one already; the group's order id either way."""
        ...

    async def get(self, order_id: str) -> Order | None:
        """The order with its lines, shares and steps, or None."""
        ...

    async def read(self, order_id: str) -> Order | None:
        """The order as last committed, or None, read on its own (no transaction): for a unit
        of work that does nothing else."""
        ...

    async def id_for_group(self, group_id: str) -> str | None:
        """The id of the group's order, if there is one."""
        ...

    async def save(self, order: Order, *, lease_seconds: float, alone: bool = False) -> None:
        """Write the order's changes if nobody saved it since it was loaded (ConflictError
        otherwise), and extend the caller's lease on it (give it back once the order is
        finished). `alone`: the unit of work writes nothing else, so a save without events may
        commit by itself."""
        ...

    async def claim_due(self, limit: int, lease_seconds: float) -> list[Order]:
        """Lease up to `limit` unfinished orders that are due and not leased by anyone else,
        as they are stored (committed by itself: the unit of work's only work)."""
        ...

    async def schedule_retry(self, order_id: str, delay_seconds: float) -> int:
        """Release the lease and try again after `delay_seconds`; the new attempt count."""
        ...

    async def add_step(self, order_id: str, step: str, outcome: str, detail: str) -> None:
        """Record a step outcome that does not change the order (e.g. a retry)."""
        ...

    async def attempts(self, order_id: str) -> int:
        """Failed attempts since the last step that succeeded."""
        ...


class GroupViews(Protocol):
    """Who may see what about a group (the group service answers)."""

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        """The caller's view; NotFoundError when they may not see the group at all."""
        ...


class OrderLocks(Protocol):
    """A per-order lock (an aid in front of the database lease; adapters/redis_aids.py)."""

    async def acquire(self, order_id: str, ttl_seconds: float) -> str | None:
        """A token when the lock is ours, None when another holds it."""
        ...

    async def release(self, order_id: str, token: str) -> None:
        """Release the lock if `token` still holds it."""
        ...


class OrderCache(Protocol):
    """Serialized Order messages of finished orders (an aid: misses are always fine)."""

    async def get(self, order_id: str) -> bytes | None:
        """The cached order, or None."""
        ...

    async def put(self, order_id: str, order: bytes) -> None:
        """Cache a finished order."""
        ...


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
    """The payment service refused the operation for good (declined, wrong state, unknown):
    any answer that is not worth retrying."""


class PaymentUnavailableError(Exception):
    """The payment service could not be reached or failed transiently (retry later)."""


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
