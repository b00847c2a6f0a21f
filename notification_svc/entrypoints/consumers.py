"""The service's durable JetStream consumers (each handler has the shape ``(message, uow)``).

- ``notification-group`` (stream MPPO_GROUP): group.opened, group.reminder_due, member.paid,
  group.confirmed, group.expired, group.cancelled, group.host_fallback → notification rows.
- ``notification-payments`` (stream MPPO_PAYMENT): payment.succeeded / captured / voided /
  refunded → the payment facts expiry and cancellation notices report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from google.protobuf.message import Message
from nats.js import JetStreamContext

from mppo.platform.inbox import EventConsumer
from notification_svc.service_layer.handlers import PAYMENT_HANDLERS, EventHandler
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

GROUP_DURABLE = "notification-group"
PAYMENT_DURABLE = "notification-payments"
# The group handlers call the group service; give an outage time before dead-lettering.
MAX_DELIVER = 12


def build_consumers(
    js: JetStreamContext,
    uow: Callable[[], NotificationUnitOfWork],
    *,
    prefix: str,
    group_handlers: Mapping[type[Message], EventHandler],
) -> list[EventConsumer]:
    """The consumers, ready to run."""
    return [
        EventConsumer(
            js,
            uow=uow,
            durable=GROUP_DURABLE,
            stream="MPPO_GROUP",
            handlers=group_handlers,
            prefix=prefix,
            max_deliver=MAX_DELIVER,
        ),
        EventConsumer(
            js,
            uow=uow,
            durable=PAYMENT_DURABLE,
            stream="MPPO_PAYMENT",
            handlers=PAYMENT_HANDLERS,
            prefix=prefix,
        ),
    ]
