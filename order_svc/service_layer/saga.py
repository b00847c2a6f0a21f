"""The order orchestrator: validate → reserve → place → capture each share → confirmed.

One step at a time: an external call, then one unit of work that saves the order and its
`order_events` row(s); the events the order records (order.confirmed, order.failed) reach the
outbox through that unit of work, in the same transaction. The capture step is the exception
to "one call": the shares are independent payments, so they are captured concurrently (each
with its own key and its own `capture` row), and the order is confirmed in the same
transaction; likewise the release of the last share and the order's failure. The order is
loaded once per lease and kept in memory from step to step (each save checks its version). A
crash between the call and the commit repeats the call on resume with the same idempotency key
(merchant: ``<order>:reserve|place|cancel``; payment: ``<order>:capture|void|refund:<payment>``),
so its effect happens once.

Failures: a refusal (out of stock, rejected, declined) moves the order to COMPENSATING at once;
a transient error is retried later with backoff, and after ``max_forward_attempts`` the order
fails with MERCHANT_UNAVAILABLE / CAPTURE_FAILED. Compensation cancels whatever the merchant
holds for us first (time-sensitive: stop fulfilment), then voids holds and refunds captures,
retrying transient errors for as long as it takes, and finally publishes order.failed.

Fault points (MPPO_FAULT, tests only): ``order_after_merchant_place`` (the merchant placed the
order, we have not recorded it) and ``order_before_capture`` (placement recorded, no share
captured yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from mppo.platform.logs import bind_ids
from mppo.platform.outbox import fault_point
from order_svc.domain.model import FailureReason, Order, OrderStatus, Share, ShareStatus
from order_svc.domain.validator import check_against_catalogue, check_consistency
from order_svc.observability import SAGA_FINISHED, observe_step
from order_svc.service_layer.messages import to_proto
from order_svc.service_layer.ports import (
    MerchantClient,
    MerchantDirectory,
    MerchantRefusedError,
    MerchantUnavailableError,
    OrderCache,
    OrderLocks,
    PaymentGateway,
    PaymentRefusedError,
    PaymentState,
    PaymentUnavailableError,
)
from order_svc.service_layer.unit_of_work import OrderUnitOfWork

logger = logging.getLogger(__name__)

FAULT_AFTER_MERCHANT_PLACE = "order_after_merchant_place"
FAULT_BEFORE_CAPTURE = "order_before_capture"

_MONEY_FREE = {"VOIDED", "REFUNDED", "FAILED", "EXPIRED", "REQUIRES_ACTION"}
_CAPTURED = {"CAPTURED", "PARTIALLY_REFUNDED"}


@dataclass(frozen=True)
class SagaSettings:
    """Retry and lease tuning."""

    lease_seconds: float = 30.0
    max_forward_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after `attempts` failed ones."""
        return float(min(self.retry_base_seconds * 2**attempts, self.retry_max_seconds))


class _TransientError(Exception):
    """A step could not finish now; retry later (forward steps give up with `reason`)."""

    def __init__(self, step: str, detail: str, reason: FailureReason | None) -> None:
        super().__init__(detail)
        self.step = step
        self.detail = detail
        self.reason = reason


class OrderSaga:
    """Drives one order to CONFIRMED or FAILED."""

    def __init__(
        self,
        uow: Callable[[], OrderUnitOfWork],
        merchants: MerchantDirectory,
        payments: PaymentGateway,
        locks: OrderLocks,
        cache: OrderCache,
        settings: SagaSettings,
        on_finished: Callable[[Order], None] | None = None,
    ) -> None:
        self._uow = uow
        self._merchants = merchants
        self._payments = payments
        self._locks = locks
        self._cache = cache
        self._settings = settings
        self._on_finished = on_finished

    async def advance(self, order_id: str, claimed: Order | None = None) -> None:
        """Run steps until the order is finished or must wait (the caller holds its lease);
        `claimed`: the order as the claim that leased it read it (else it is read here)."""
        token = await self._locks.acquire(order_id, self._settings.lease_seconds)
        if token is None:
            logger.info("order %s is being advanced elsewhere", order_id)
            return
        try:
            with bind_ids(order_id=order_id):
                await self._advance(order_id, claimed)
        finally:
            await self._locks.release(order_id, token)

    async def _advance(self, order_id: str, order: Order | None) -> None:
        # Read once: while the lease is held nobody else writes the order, and each save
        # checks the version (a concurrent writer makes it fail), so the order in memory is
        # the stored one from step to step.
        if order is None:
            async with self._uow() as uow:
                order = await uow.orders.read(order_id)
        if order is None or order.status.terminal:
            return
        with bind_ids(group_id=order.group_id):
            while True:
                started, recorded = perf_counter(), len(order.steps)
                try:
                    await self._step(order)
                except _TransientError as exc:
                    if not await self._retry_later(order, exc):
                        observe_step(exc.step, "retry", perf_counter() - started)
                        return
                    # gave up on a forward step: commit the failure
                await self._commit(order)
                # the step is named by the first record it made (a capture step records
                # each share and the confirmation); it failed if any of them did
                made = order.steps[recorded:]
                if made:
                    failed = any(s.outcome == "failed" for s in made)
                    outcome = "failed" if failed else made[-1].outcome
                    observe_step(made[0].step, outcome, perf_counter() - started)
                if order.status.terminal:
                    SAGA_FINISHED.labels(order.status.value).inc()
                    await self._finished(order)
                    return

    async def _commit(self, order: Order) -> None:
        """Save the order's step; the events it recorded go to the outbox with it. A step
        that recorded no event is one statement committing by itself; the save of a finished
        order gives its lease back."""
        async with self._uow() as uow:
            await uow.orders.save(order, lease_seconds=self._settings.lease_seconds, alone=True)
            await uow.commit()
        logger.info("order %s is %s (%s)", order.order_id, order.status, order.steps[-1].step)

    async def _finished(self, order: Order) -> None:
        """Cache the finished order as it was just stored (its last save gave the lease back)."""
        await self._cache.put(order.order_id, to_proto(order).SerializeToString())
        if self._on_finished is not None:
            self._on_finished(order)

    async def _retry_later(self, order: Order, exc: _TransientError) -> bool:
        """Schedule a retry, or give up on a forward step (then True: commit the failure)."""
        async with self._uow() as uow:
            attempts = await uow.orders.attempts(order.order_id)
            forward = order.status is not OrderStatus.COMPENSATING
            if forward and exc.reason and attempts + 1 >= self._settings.max_forward_attempts:
                logger.warning("order %s: giving up on %s: %s", order.order_id, exc.step, exc)
                order.fail(exc.reason, exc.detail, exc.step)
                return True
            delay = self._settings.backoff(attempts)
            await uow.orders.schedule_retry(order.order_id, delay)
            await uow.orders.add_step(order.order_id, exc.step, "retry", exc.detail)
            await uow.commit()
        logger.warning(
            "order %s: %s not done (%s); retry %s in %.1fs",
            order.order_id,
            exc.step,
            exc.detail,
            attempts + 1,
            delay,
        )
        return False

    async def _step(self, order: Order) -> None:
        merchant = self._merchants.client_for(order.merchant_id)
        if order.status is OrderStatus.CREATED:
            await self._validate(order, merchant)
        elif order.status is OrderStatus.VALIDATED:
            await self._place(order, merchant)
        elif order.status is OrderStatus.PLACED:
            await self._capture_next(order)
        elif order.status is OrderStatus.COMPENSATING:
            await self._compensate_next(order, merchant)

    async def _validate(self, order: Order, merchant: MerchantClient) -> None:
        problems = check_consistency(
            order.lines,
            order.shares,
            currency=order.currency,
            total_minor=order.total_minor,
            fees_minor=order.fees_minor,
            tax_minor=order.tax_minor,
            tip_minor=order.tip_minor,
        )
        if problems:
            order.fail(FailureReason.INVALID_ORDER, "; ".join(problems), "validate")
            return
        try:
            catalogue = await merchant.catalogue()
        except MerchantUnavailableError as exc:
            raise _TransientError("validate", str(exc), FailureReason.MERCHANT_UNAVAILABLE) from exc
        rejection = check_against_catalogue(order.lines, order.currency, catalogue)
        if rejection is not None:
            order.fail(rejection.reason, rejection.detail, "validate")
            return
        order.mark_validated()

    async def _place(self, order: Order, merchant: MerchantClient) -> None:
        step = "place" if order.reservation_id else "reserve"
        try:
            if not order.reservation_id:
                reservation_id = await merchant.reserve(
                    reference=order.order_id,
                    lines=order.lines,
                    currency=order.currency,
                    idempotency_key=f"{order.order_id}:reserve",
                )
                order.mark_reserved(reservation_id)
                return
            placement = await merchant.place(
                reference=order.order_id,
                reservation_id=order.reservation_id,
                total_minor=order.total_minor,
                currency=order.currency,
                idempotency_key=f"{order.order_id}:place",
            )
        except MerchantRefusedError as exc:
            order.fail(exc.reason, exc.detail, step)
            return
        except MerchantUnavailableError as exc:
            raise _TransientError(step, str(exc), FailureReason.MERCHANT_UNAVAILABLE) from exc
        fault_point(FAULT_AFTER_MERCHANT_PLACE)
        order.mark_placed(placement.merchant_order_id)

    async def _capture_next(self, order: Order) -> None:
        """Capture every pending share at once (independent payments, one key each), record
        each capture, and confirm in the same step when none is left.

        First every pending share is read: if one can no longer be captured (its hold lapsed,
        was voided or failed), the order fails before anyone is charged, so the others are
        voided rather than captured and refunded.
        """
        pending = order.pending_shares
        if pending and len(pending) == len(order.shares):
            fault_point(FAULT_BEFORE_CAPTURE)
        states = await asyncio.gather(*(self._reread(order, s, "capture") for s in pending))
        for share, state in zip(pending, states, strict=True):
            if state.status in _CAPTURED or state.status == "AUTHORIZED":
                continue
            order.fail(
                FailureReason.CAPTURE_FAILED,
                f"{share.payment_id} is {state.status} before capture",
                "capture",
            )
            return
        outcomes = await asyncio.gather(
            *(self._capture(order, share) for share in pending), return_exceptions=True
        )
        refusal: str | None = None
        transient: _TransientError | None = None
        for share, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, _TransientError):
                transient = transient or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome is None:
                order.mark_captured(share.payment_id)
            else:
                refusal = refusal or outcome
        if refusal is not None:
            # the captured shares are recorded: compensation refunds them
            order.fail(FailureReason.CAPTURE_FAILED, refusal, "capture")
            return
        if transient is not None:
            if order.new_steps:
                await self._commit(order)  # keep what was captured
            raise transient
        order.mark_confirmed()  # records order.confirmed

    async def _capture(self, order: Order, share: Share) -> str | None:
        """Capture one share with its own idempotency key: None when captured, else why not."""
        try:
            state = await self._payments.capture(
                share.payment_id,
                share.amount_minor,
                order.currency,
                f"{order.order_id}:capture:{share.payment_id}",
            )
        except PaymentRefusedError as exc:
            state = await self._reread(order, share, "capture")
            if not (state.status in _CAPTURED and state.captured_minor >= share.amount_minor):
                return f"{share.payment_id}: {exc}"
        except PaymentUnavailableError as exc:
            raise _TransientError("capture", str(exc), FailureReason.CAPTURE_FAILED) from exc
        if state.status not in _CAPTURED:
            return f"{share.payment_id} is {state.status} after capture"
        return None

    async def _reread(self, order: Order, share: Share, step: str) -> PaymentState:
        try:
            return await self._payments.get(share.payment_id)
        except (PaymentUnavailableError, PaymentRefusedError) as exc:
            # on the way forward a bounded retry then fails the order (and compensation
            # releases what was captured); compensation itself retries until it succeeds
            reason = None if step == "release" else FailureReason.CAPTURE_FAILED
            raise _TransientError(step, f"re-reading {share.payment_id}: {exc}", reason) from exc

    async def _compensate_next(self, order: Order, merchant: MerchantClient) -> None:
        if order.merchant_touched and not order.merchant_cancelled:
            try:
                result = await merchant.cancel(
                    reference=order.order_id, idempotency_key=f"{order.order_id}:cancel"
                )
            except MerchantRefusedError as exc:
                # The merchant will not cancel (e.g. already fulfilled): record it and still
                # return the money; the merchant's refusal is for people to follow up.
                logger.error("order %s: merchant refused to cancel: %s", order.order_id, exc)
                order.mark_merchant_cancelled(f"refused: {exc.detail}", outcome="refused")
                return
            except MerchantUnavailableError as exc:
                raise _TransientError("cancel_merchant_order", str(exc), None) from exc
            order.mark_merchant_cancelled(result)
            return
        unreleased = order.unreleased_shares
        if unreleased:
            await self._release(order, unreleased[0])
        if not order.unreleased_shares:
            # nothing left to release: finished in the same step (no call to make first)
            order.mark_failed()  # records order.failed

    async def _release(self, order: Order, share: Share) -> None:
        """Void the hold or refund the capture of one share."""
        pid = share.payment_id
        reason = f"order {order.order_id} failed: {order.failure_reason}"
        try:
            if share.status is ShareStatus.CAPTURED:
                state = await self._payments.refund(pid, reason, f"{order.order_id}:refund:{pid}")
            else:
                state = await self._payments.void(pid, reason, f"{order.order_id}:void:{pid}")
        except PaymentRefusedError as exc:
            logger.info(
                "order %s: release of %s refused (%s); re-reading", order.order_id, pid, exc
            )
            state = await self._reread(order, share, "release")
        except PaymentUnavailableError as exc:
            raise _TransientError("release", f"{pid}: {exc}", None) from exc
        if state.status in _CAPTURED:
            # captured although we had not recorded it (a crash after capture): refund it
            try:
                state = await self._payments.refund(pid, reason, f"{order.order_id}:refund:{pid}")
            except (PaymentRefusedError, PaymentUnavailableError) as exc:
                raise _TransientError("refund", f"{pid}: {exc}", None) from exc
        if state.status not in _MONEY_FREE:
            raise _TransientError("release", f"{pid} is still {state.status}", None)
        released = (
            ShareStatus.REFUNDED
            if state.status == "REFUNDED" or share.status is ShareStatus.CAPTURED
            else ShareStatus.VOIDED
        )
        order.mark_released(pid, released, state.status)
