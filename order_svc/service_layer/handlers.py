"""The order service's handlers: every one has the shape ``handler(message, uow)``.

* :meth:`OrderHandlers.create_order` (CreateOrder, from our services) and
  :meth:`OrderHandlers.group_finalized` (the `group.finalized` event) record the group's
  order — once per group — with the one builder, `messages.new_order`; the order records
  order.created, which the unit of work writes to the outbox in the same transaction, and the
  saga runner is woken once that transaction has committed.
* :meth:`OrderHandlers.get_order` / :meth:`OrderHandlers.get_order_by_group` read an order for
  a member of its group: the database is the truth, finished orders come from the cache.
* :meth:`OrderHandlers.quote_cart` (QuoteCart, from the group service) prices a cart against
  the merchant's catalogue when a group is created, so a cart the merchant would refuse on
  price never reaches anyone's card.

The saga that places the order is in saga.py; its runner in runner.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mppo.clients.group import GroupView
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_pb2
from mppo.platform.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from mppo.platform.logs import bind_ids
from mppo.platform.order_failure import failure_words
from order_svc.domain.model import Line, Order
from order_svc.domain.validator import check_consistency, quote_problems
from order_svc.service_layer.commands import (
    CreateOrder,
    GetOrder,
    GetOrderByGroup,
    OrderSpec,
    QuoteCart,
)
from order_svc.service_layer.messages import new_order, spec_from, to_proto
from order_svc.service_layer.ports import (
    GroupViews,
    MerchantDirectory,
    MerchantRefusedError,
    MerchantUnavailableError,
    OrderCache,
)
from order_svc.service_layer.unit_of_work import OrderUnitOfWork

logger = logging.getLogger(__name__)


def checked_order(spec: OrderSpec) -> Order:
    """The order `spec` describes, or InvalidArgumentError naming what does not add up."""
    violations: list[FieldViolation] = []
    if not spec.group_id:
        violations.append(FieldViolation("group_id", "required"))
    if not spec.merchant_id:
        violations.append(FieldViolation("merchant_id", "required"))
    for index, share in enumerate(spec.shares):
        if share.currency != spec.currency:
            violations.append(
                FieldViolation(f"shares[{index}].amount.currency_code", f"must be {spec.currency}")
            )
    order = new_order(spec)
    for problem in check_consistency(
        order.lines,
        order.shares,
        currency=order.currency,
        total_minor=order.total_minor,
        fees_minor=order.fees_minor,
        tax_minor=order.tax_minor,
        tip_minor=order.tip_minor,
    ):
        violations.append(FieldViolation("order", problem))
    if violations:
        raise InvalidArgumentError("the order is not consistent", violations)
    return order


class OrderHandlers:
    """The handlers, with what they need bound once in bootstrap."""

    def __init__(
        self,
        cache: OrderCache,
        groups: GroupViews,
        wake: Callable[[], None],
        merchants: MerchantDirectory,
    ) -> None:
        #: finished orders, serialized
        self._cache = cache
        #: who may see which group's order
        self._groups = groups
        #: wakes the saga runner (after the commit that created an order)
        self._wake = wake
        #: the merchants' backends (their catalogues price a cart)
        self._merchants = merchants

    async def quote_cart(self, query: QuoteCart, uow: OrderUnitOfWork) -> tuple[Line, ...]:
        """The cart's lines as the merchant's catalogue prices them, when it prices every line
        as the cart does; InvalidArgumentError naming each line that differs (unknown SKU,
        other currency, other unit price), UnavailableError when the catalogue cannot be read.
        Reads and writes nothing of ours (`uow` is unused)."""
        if not query.caller.service or query.caller.user_id:
            raise PermissionDeniedError("QuoteCart is internal", reason="INTERNAL_ONLY")
        violations: list[FieldViolation] = []
        if not query.merchant_id:
            violations.append(FieldViolation("merchant_id", "required"))
        if not query.lines:
            violations.append(FieldViolation("items", "at least one line"))
        if violations:
            raise InvalidArgumentError("nothing to quote", violations)
        with bind_ids(merchant_id=query.merchant_id):
            try:
                catalogue = await self._merchants.client_for(query.merchant_id).catalogue()
            except MerchantUnavailableError as exc:
                raise UnavailableError(
                    f"the merchant's catalogue cannot be read now: {exc}"
                ) from exc
            except MerchantRefusedError as exc:
                raise UnavailableError(
                    f"the merchant did not show its catalogue: {exc.detail}"
                ) from exc
            problems = quote_problems(query.lines, query.currency, catalogue)
            if problems:
                logger.info("cart refused: %d line(s) differ from the catalogue", len(problems))
                raise InvalidArgumentError(
                    "the cart does not match the merchant's catalogue",
                    [FieldViolation(f"items[{p.index}].{p.field}", p.detail) for p in problems],
                    reason="CATALOGUE_MISMATCH",
                )
        return query.lines

    async def create_order(self, cmd: CreateOrder, uow: OrderUnitOfWork) -> order_pb2.Order:
        """Record the group's order (or return the one it has) and start the saga."""
        if not cmd.caller.service:
            raise PermissionDeniedError("CreateOrder is internal", reason="INTERNAL_ONLY")
        order = checked_order(cmd.order)
        async with uow:
            order_id = await self._record(order, uow)
            await uow.commit()
        return await self._read(order_id, uow)

    async def group_finalized(
        self, message: group_events_pb2.GroupFinalized, uow: OrderUnitOfWork
    ) -> None:
        """`group.finalized` becomes the group's order (the consumer's unit of work commits)."""
        event_id = uow.event.event_id if uow.event is not None else ""
        with bind_ids(group_id=message.group_id):
            if not message.group_id:
                logger.error("group.finalized %s without a group id; ignored", event_id)
                return
            order_id = await self._record(new_order(spec_from(message)), uow)
            logger.info("group.finalized %s → order %s", event_id, order_id)

    async def _record(self, order: Order, uow: OrderUnitOfWork) -> str:
        """Store `order` unless its group has one; the group's order id either way.

        The unique group id makes this safe against concurrent duplicates: the loser waits for
        the winner's commit and then finds its order.
        """
        order_id = await uow.orders.add_if_absent(order)
        if order_id == order.order_id:
            uow.after_commit(self._wake)
            logger.info("order %s created for group %s", order_id, order.group_id)
        else:
            logger.info("group %s already has order %s", order.group_id, order_id)
        return order_id

    async def get_order(self, query: GetOrder, uow: OrderUnitOfWork) -> order_pb2.Order:
        """One order with its steps, for a member of its group."""
        if not query.order_id:
            raise InvalidArgumentError(
                "order_id required", [FieldViolation("order_id", "required")]
            )
        order = await self._read(query.order_id, uow)
        view = await self._groups.view(query.caller, order.group_id)  # members of the group only
        return for_viewer(order, view)

    async def get_order_by_group(
        self, query: GetOrderByGroup, uow: OrderUnitOfWork
    ) -> order_pb2.Order:
        """The group's order, for a member of the group."""
        if not query.group_id:
            raise InvalidArgumentError(
                "group_id required", [FieldViolation("group_id", "required")]
            )
        view = await self._groups.view(query.caller, query.group_id)  # members of the group only
        async with uow:
            order_id = await uow.orders.id_for_group(query.group_id)
        if order_id is None:
            raise NotFoundError(f"group {query.group_id} has no order", reason="ORDER_NOT_FOUND")
        return for_viewer(await self._read(order_id, uow), view)

    async def _read(self, order_id: str, uow: OrderUnitOfWork) -> order_pb2.Order:
        """One order; NotFoundError when there is none. Finished orders are cached."""
        cached = await self._cache.get(order_id)
        if cached is not None:
            return order_pb2.Order.FromString(cached)
        async with uow:
            order = await uow.orders.read(order_id)
        if order is None:
            raise NotFoundError(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
        message = to_proto(order)
        if order.status.terminal:
            await self._cache.put(order_id, message.SerializeToString())
        return message


def for_viewer(order: order_pb2.Order, view: GroupView) -> order_pb2.Order:
    """The order as `view`'s caller may see it. The host and our services see it whole; a
    member sees the failure's cause in words (the detail can name another member's payment
    and quote their provider), no step details (they name payments), and the payment id of
    their own shares only — as the payment service shows a member only their own payments."""
    if view.everything or view.is_host:
        return order
    seen = order_pb2.Order()
    seen.CopyFrom(order)
    if seen.failure_detail:
        seen.failure_detail = failure_words(seen.failure_reason)
    for step in seen.steps:
        step.detail = ""
    for share in seen.shares:
        if not view.may_see_member(share.member_id):
            share.payment_id = ""
    return seen
