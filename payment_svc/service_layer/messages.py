"""Domain objects to protobuf: the Payment message and the payment.* event payloads."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from mppo.common.v1.money_pb2 import Money
from mppo.payment.v1 import payment_events_pb2 as ev
from mppo.payment.v1 import payment_pb2
from mppo.platform.event_types import new_event
from mppo.platform.events import Event
from payment_svc.domain.model import Payment, PaymentEvent, PaymentStatus

PROVIDER_ENUM: Mapping[str, payment_pb2.Provider.ValueType] = {
    "sandbox": payment_pb2.PROVIDER_SANDBOX,
    "stripe": payment_pb2.PROVIDER_STRIPE,
    "razorpay": payment_pb2.PROVIDER_RAZORPAY,
    "paypal": payment_pb2.PROVIDER_PAYPAL,
}
PROVIDER_NAME: Mapping[int, str] = {v: k for k, v in PROVIDER_ENUM.items()}
STATUS_ENUM: Mapping[PaymentStatus, payment_pb2.PaymentStatus.ValueType] = {
    PaymentStatus.REQUIRES_ACTION: payment_pb2.PAYMENT_STATUS_REQUIRES_ACTION,
    PaymentStatus.AUTHORIZED: payment_pb2.PAYMENT_STATUS_AUTHORIZED,
    PaymentStatus.CAPTURED: payment_pb2.PAYMENT_STATUS_CAPTURED,
    PaymentStatus.VOIDED: payment_pb2.PAYMENT_STATUS_VOIDED,
    PaymentStatus.PARTIALLY_REFUNDED: payment_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: payment_pb2.PAYMENT_STATUS_REFUNDED,
    PaymentStatus.FAILED: payment_pb2.PAYMENT_STATUS_FAILED,
    PaymentStatus.EXPIRED: payment_pb2.PAYMENT_STATUS_EXPIRED,
}


def _ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def money(amount_minor: int, currency_code: str) -> Money:
    """A Money message."""
    return Money(amount_minor=amount_minor, currency_code=currency_code)


def to_proto(payment: Payment) -> payment_pb2.Payment:
    """The Payment message; its create/update times are the payments row's."""
    message = payment_pb2.Payment(
        payment_id=payment.payment_id,
        group_id=payment.group_id,
        member_id=payment.member_id,
        attempt=payment.attempt,
        amount=money(payment.amount_minor, payment.currency_code),
        amount_captured=money(payment.amount_captured_minor, payment.currency_code),
        amount_refunded=money(payment.amount_refunded_minor, payment.currency_code),
        status=STATUS_ENUM[payment.status],
        provider=PROVIDER_ENUM.get(payment.provider, payment_pb2.PROVIDER_UNSPECIFIED),
        provider_payment_id=payment.provider_payment_id,
        payment_link=payment.payment_link,
        failure_reason=payment.failure_reason,
    )
    for name, moment in (
        ("authorization_expire_time", payment.authorization_expires_at),
        ("create_time", payment.created_at),
        ("update_time", payment.updated_at),
    ):
        stamp = _ts(moment)
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def to_event(payment: Payment, event: PaymentEvent) -> Event:
    """The outbox event for one domain event of ``payment``."""
    common = {
        "payment_id": payment.payment_id,
        "group_id": payment.group_id,
        "member_id": payment.member_id,
    }
    amount = money(event.amount_minor, payment.currency_code)
    message: (
        ev.PaymentRequested
        | ev.PaymentSucceeded
        | ev.PaymentFailed
        | ev.PaymentCaptured
        | ev.PaymentVoided
        | ev.PaymentRefunded
        | ev.AuthorizationExpiring
    )
    if event.kind == "requested":
        message = ev.PaymentRequested(
            **common,
            attempt=payment.attempt,
            amount=amount,
            payment_link=payment.payment_link,
            provider=PROVIDER_ENUM.get(payment.provider, payment_pb2.PROVIDER_UNSPECIFIED),
        )
    elif event.kind == "succeeded":
        message = ev.PaymentSucceeded(
            **common,
            attempt=payment.attempt,
            amount=amount,
            captured=event.captured,
            authorization_expire_time=_ts(payment.authorization_expires_at),
        )
    elif event.kind == "failed":
        message = ev.PaymentFailed(**common, attempt=payment.attempt, reason=event.reason)
    elif event.kind == "captured":
        message = ev.PaymentCaptured(**common, amount=amount)
    elif event.kind == "voided":
        message = ev.PaymentVoided(**common, amount=amount, reason=event.reason)
    elif event.kind == "refunded":
        message = ev.PaymentRefunded(
            **common,
            amount=amount,
            total_refunded=money(payment.amount_refunded_minor, payment.currency_code),
            reason=event.reason,
        )
    elif event.kind == "authorization_expiring":
        message = ev.AuthorizationExpiring(
            payment_id=payment.payment_id,
            group_id=payment.group_id,
            authorization_expire_time=_ts(payment.authorization_expires_at),
        )
    else:
        raise ValueError(f"unknown payment event kind {event.kind!r}")
    return new_event(payment.payment_id, message)
