"""From event payloads to notification triggers: who is told what, with which facts.

Only non-personal facts go into a trigger (amounts in minor units, currency, links,
deadlines, ids, reasons); names and addresses are added at delivery time.
"""

from __future__ import annotations

from datetime import UTC

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from mppo.common.v1 import money_pb2
from mppo.group.v1 import group_events_pb2 as ge
from mppo.platform.events import format_timestamp
from notification_svc.domain.model import Kind, Trigger

#: the group event payloads this service turns into notifications
TRIGGERING_EVENTS: tuple[type[Message], ...] = (
    ge.GroupOpened,
    ge.PaymentReminderDue,
    ge.MemberPaid,
    ge.GroupConfirmed,
    ge.GroupExpired,
    ge.GroupCancelled,
    ge.HostFallbackRequested,
)


def _time(ts: Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return format_timestamp(ts.ToDatetime(tzinfo=UTC))


def _money(money: money_pb2.Money, key: str = "amount_minor") -> dict[str, str]:
    return {key: str(money.amount_minor), "currency": money.currency_code}


def trigger_for(message: Message) -> Trigger | None:
    """The trigger of one decoded group event (None for events that notify nobody)."""
    match message:
        case ge.GroupOpened():
            return Trigger(
                kind=Kind.INVITATION,
                group_id=message.group_id,
                member_ids=[i.member_id for i in message.invitations],
                params={
                    "group_id": message.group_id,
                    "deadline": _time(message.deadline),
                    **_money(message.total, "total_minor"),
                },
                per_member={
                    i.member_id: {
                        "share_minor": str(i.share.amount_minor),
                        "payment_id": i.payment_id,
                        "payment_link": i.payment_link,
                    }
                    for i in message.invitations
                },
            )
        case ge.PaymentReminderDue():
            return Trigger(
                kind=Kind.REMINDER,
                group_id=message.group_id,
                member_ids=[message.member_id],
                params={
                    "group_id": message.group_id,
                    "payment_link": message.payment_link,
                    "deadline": _time(message.deadline),
                },
            )
        case ge.MemberPaid():
            return Trigger(
                kind=Kind.PAYMENT_RECEIVED,
                group_id=message.group_id,
                member_ids=[message.member_id],
                params={
                    "group_id": message.group_id,
                    "payment_id": message.payment_id,
                    "remaining_members": str(message.remaining_members),
                    "captured": "true" if message.captured else "false",
                    **_money(message.amount),
                },
            )
        case ge.GroupConfirmed():
            return Trigger(
                kind=Kind.GROUP_CONFIRMED,
                group_id=message.group_id,
                params={"group_id": message.group_id, "order_id": message.order_id},
            )
        case ge.GroupExpired():
            return Trigger(
                kind=Kind.GROUP_EXPIRED,
                group_id=message.group_id,
                params={"group_id": message.group_id, "reason": message.reason},
            )
        case ge.GroupCancelled():
            return Trigger(
                kind=Kind.GROUP_CANCELLED,
                group_id=message.group_id,
                params={"group_id": message.group_id, "reason": message.reason},
            )
        case ge.HostFallbackRequested():
            return Trigger(
                kind=Kind.HOST_FALLBACK,
                group_id=message.group_id,
                member_ids=[message.host_member_id],
                params={
                    "group_id": message.group_id,
                    "payment_id": message.payment_id,
                    "payment_link": message.payment_link,
                    "grace_deadline": _time(message.grace_deadline),
                    **_money(message.amount),
                },
            )
    return None
