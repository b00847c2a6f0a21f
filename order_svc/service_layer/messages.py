"""Between the contracts (proto messages) and the domain: inputs in, orders and events out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2, order_pb2, order_service_pb2
from order_svc.domain.model import Line, Order, Share


def order_from(
    finalized: group_events_pb2.GroupFinalized | order_service_pb2.CreateOrderRequest,
) -> Order:
    """A CREATED order from a `group.finalized` event or a CreateOrder call (same fields)."""
    return new_order(
        group_id=finalized.group_id,
        merchant_id=finalized.merchant_id,
        items=finalized.items,
        total=finalized.total,
        fees_minor=finalized.fees_minor,
        tax_minor=finalized.tax_minor,
        tip_minor=finalized.tip_minor,
        shares=[(s.member_id, s.payment_id, s.amount) for s in finalized.shares],
    )


def new_order(
    *,
    group_id: str,
    merchant_id: str,
    items: Sequence[cart_pb2.LineItem],
    total: money_pb2.Money,
    fees_minor: int,
    tax_minor: int,
    tip_minor: int,
    shares: Sequence[tuple[str, str, money_pb2.Money]],
) -> Order:
    """A CREATED order from a finalized group (`shares` as (member, payment, amount))."""
    return Order(
        order_id=str(uuid.uuid4()),
        group_id=group_id,
        merchant_id=merchant_id,
        currency=total.currency_code,
        total_minor=total.amount_minor,
        fees_minor=fees_minor,
        tax_minor=tax_minor,
        tip_minor=tip_minor,
        lines=[Line(i.line_id, i.sku, i.name, i.quantity, i.unit_price_minor) for i in items],
        shares=[
            Share(member, payment, _amount_in(total.currency_code, amount))
            for member, payment, amount in shares
        ],
    )


def _amount_in(currency: str, amount: money_pb2.Money) -> int:
    """The share's amount; 0 when it is in another currency than the order, which makes the
    order fail validation with INVALID_ORDER (and its holds be voided) rather than guess."""
    return amount.amount_minor if amount.currency_code == currency else 0


def _money(amount: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency_code=currency)


def _timestamp(order_time: object) -> Timestamp | None:
    if not isinstance(order_time, datetime):
        return None
    stamp = Timestamp()
    stamp.FromDatetime(order_time)
    return stamp


def to_proto(order: Order) -> order_pb2.Order:
    """The Order message for `order`."""
    message = order_pb2.Order(
        order_id=order.order_id,
        group_id=order.group_id,
        merchant_id=order.merchant_id,
        merchant_order_id=order.merchant_order_id,
        status=order_pb2.OrderStatus.Value(f"ORDER_STATUS_{order.status.value}"),
        failure_reason=(
            order_pb2.OrderFailureReason.Value(f"ORDER_FAILURE_REASON_{order.failure_reason.value}")
            if order.failure_reason
            else order_pb2.ORDER_FAILURE_REASON_UNSPECIFIED
        ),
        failure_detail=order.failure_detail,
        items=[
            cart_pb2.LineItem(
                line_id=ln.line_id,
                sku=ln.sku,
                name=ln.name,
                quantity=ln.quantity,
                unit_price_minor=ln.unit_price_minor,
            )
            for ln in order.lines
        ],
        total=_money(order.total_minor, order.currency),
        fees_minor=order.fees_minor,
        tax_minor=order.tax_minor,
        tip_minor=order.tip_minor,
    )
    for share in order.shares:
        message.shares.append(
            order_pb2.OrderShare(
                member_id=share.member_id,
                payment_id=share.payment_id,
                amount=_money(share.amount_minor, order.currency),
                captured=share.status.value == "CAPTURED",
                status=order_pb2.OrderShareStatus.Value(f"ORDER_SHARE_STATUS_{share.status.value}"),
            )
        )
    for step in order.steps:
        message.steps.append(
            order_pb2.OrderStep(
                step=step.step,
                outcome=step.outcome,
                detail=step.detail,
                step_time=_timestamp(step.at),
            )
        )
    created, updated = _timestamp(order.created_at), _timestamp(order.updated_at)
    if created is not None:
        message.create_time.CopyFrom(created)
    if updated is not None:
        message.update_time.CopyFrom(updated)
    return message


def created_event(order: Order) -> order_events_pb2.OrderCreated:
    """order.created."""
    return order_events_pb2.OrderCreated(
        order_id=order.order_id,
        group_id=order.group_id,
        merchant_id=order.merchant_id,
        total=_money(order.total_minor, order.currency),
    )


def confirmed_event(order: Order) -> order_events_pb2.OrderConfirmed:
    """order.confirmed."""
    return order_events_pb2.OrderConfirmed(
        order_id=order.order_id,
        group_id=order.group_id,
        merchant_order_id=order.merchant_order_id,
        total=_money(order.total_minor, order.currency),
        merchant_id=order.merchant_id,
        payment_ids=[s.payment_id for s in order.shares],
    )


def failed_event(order: Order) -> order_events_pb2.OrderFailed:
    """order.failed."""
    reason = order.failure_reason
    return order_events_pb2.OrderFailed(
        order_id=order.order_id,
        group_id=order.group_id,
        reason=(
            order_pb2.OrderFailureReason.Value(f"ORDER_FAILURE_REASON_{reason.value}")
            if reason
            else order_pb2.ORDER_FAILURE_REASON_UNSPECIFIED
        ),
        detail=order.failure_detail,
        payment_ids=[s.payment_id for s in order.shares],
        merchant_id=order.merchant_id,
    )
