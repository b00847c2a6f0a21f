"""The service's durable JetStream consumers.

- ``notification-group`` (stream MPPO_GROUP): group.opened, group.reminder_due, member.paid,
  group.confirmed, group.expired, group.cancelled, group.host_fallback → notification rows.
- ``notification-payments`` (stream MPPO_PAYMENT): payment.succeeded / captured / voided /
  refunded → the payment facts expiry and cancellation notices report.
"""

from __future__ import annotations

from mppo.platform.inbox import EventConsumer
from mppo.platform.runtime import Infra
from notification_svc.service_layer.handlers import (
    PAYMENT_SUBJECTS,
    GroupEventHandler,
    handle_payment_event,
)
from notification_svc.service_layer.triggers import GROUP_SUBJECTS

GROUP_DURABLE = "notification-group"
PAYMENT_DURABLE = "notification-payments"
# The group handler calls the group service; give an outage time before dead-lettering.
MAX_DELIVER = 12


def build_consumers(infra: Infra, group_handler: GroupEventHandler) -> list[EventConsumer]:
    """The consumers, ready to run."""
    prefix = infra.config.infra.nats_prefix
    return [
        EventConsumer(
            infra.engine,
            infra.js,
            durable=GROUP_DURABLE,
            stream="MPPO_GROUP",
            filter_subjects=list(GROUP_SUBJECTS),
            handler=group_handler,
            prefix=prefix,
            max_deliver=MAX_DELIVER,
        ),
        EventConsumer(
            infra.engine,
            infra.js,
            durable=PAYMENT_DURABLE,
            stream="MPPO_PAYMENT",
            filter_subjects=list(PAYMENT_SUBJECTS),
            handler=handle_payment_event,
            prefix=prefix,
        ),
    ]
