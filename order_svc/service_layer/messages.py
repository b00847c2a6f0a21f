"""Between the contracts (proto messages) and the domain: inputs in, orders and events out."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import assert_never

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_events_pb2
from mppo.order.v1 import order_events_pb2, order_pb2, order_service_pb2
from mppo.platform.event_types import new_event
from mppo.platform.events import Event
from order_svc.domain.model import (
    FailureReason,
    Line,
    Order,
    OrderConfirmed,
    OrderCreated,
    OrderEvent,
    OrderFailed,
    Share,
)
from order_svc.service_layer.commands import OrderSpec, ShareSpec


def spec_from(
    finalized: group_events_pb2.GroupFinalized | order_service_pb2.CreateOrderRequest,
) -> OrderSpec:
    """What a `group.finalized` event or a CreateOrder call orders (they carry the same fields)."""
    return OrderSpec(
        group_id=finalized.group_id,
        merchant_id=finalized.merchant_id,
        currency=finalized.total.currency_code,
        total_minor=finalized.total.amount_minor,
        fees_minor=finalized.fees_minor,
        tax_minor=finalized.tax_minor,
        tip_minor=finalized.tip_minor,
        lines=tuple(
            Line(i.line_id, i.sku, i.name, i.quantity, i.unit_price_minor) for i in finalized.items
        ),
        shares=tuple(
            ShareSpec(s.member_id, s.payment_id, s.amount.amount_minor, s.amount.currency_code)
            for s in finalized.shares
        ),
    )


def new_order(spec: OrderSpec) -> Order:
    """The one way an order is built: a CREATED order (recording OrderCreated) for `spec`."""
    return Order.create(
        order_id=str(uuid.uuid4()),
        group_id=spec.group_id,
        merchant_id=spec.merchant_id,
        currency=spec.currency,
        total_minor=spec.total_minor,
        fees_minor=spec.fees_minor,
        tax_minor=spec.tax_minor,
        tip_minor=spec.tip_minor,
        lines=list(spec.lines),
        shares=[
            Share(s.member_id, s.payment_id, _amount_in(spec.currency, s)) for s in spec.shares
        ],
    )


def _amount_in(currency: str, share: ShareSpec) -> int:
    """The share's amount; 0 when it is in another currency than the order, which makes the
    order fail validation with INVALID_ORDER (and its holds be voided) rather than guess."""
    return share.amount_minor if share.currency == currency else 0


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
        failure_reason=_reason(order.failure_reason),
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


def _reason(reason: FailureReason | None) -> order_pb2.OrderFailureReason.ValueType:
    if reason is None:
        return order_pb2.ORDER_FAILURE_REASON_UNSPECIFIED
    return order_pb2.OrderFailureReason.Value(f"ORDER_FAILURE_REASON_{reason.value}")


def event_message(event: OrderEvent) -> Message:
    """The contract payload of a domain event (order.created / confirmed / failed)."""
    if isinstance(event, OrderCreated):
        return order_events_pb2.OrderCreated(
            order_id=event.order_id,
            group_id=event.group_id,
            merchant_id=event.merchant_id,
            total=_money(event.total_minor, event.currency),
        )
    if isinstance(event, OrderConfirmed):
        return order_events_pb2.OrderConfirmed(
            order_id=event.order_id,
            group_id=event.group_id,
            merchant_order_id=event.merchant_order_id,
            total=_money(event.total_minor, event.currency),
            merchant_id=event.merchant_id,
            payment_ids=list(event.payment_ids),
        )
    if isinstance(event, OrderFailed):
        return order_events_pb2.OrderFailed(
            order_id=event.order_id,
            group_id=event.group_id,
            reason=_reason(event.reason),
            detail=event.detail,
            payment_ids=list(event.payment_ids),
            merchant_id=event.merchant_id,
        )
    assert_never(event)


def to_outbox(order: Order, event: OrderEvent) -> Event:
    """The outbox event for a domain event `order` recorded (the unit of work's translate)."""
    return new_event(order.order_id, event_message(event))
