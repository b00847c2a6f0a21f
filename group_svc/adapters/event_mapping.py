"""The events the group service publishes, built from the aggregate and what it recorded
(payloads in proto/mppo/group/v1/group_events.proto). The unit of work calls `to_outbox` for
every domain event a tracked group recorded, when it commits."""

from __future__ import annotations

from google.protobuf.message import Message

from group_svc.adapters.proto_mapping import ROLE_TO_PROTO, line_to_proto, money, timestamp
from group_svc.domain import events as de
from group_svc.domain.model import AttemptStatus, Group
from mppo.group.v1 import group_events_pb2 as ev
from mppo.platform.event_types import new_event
from mppo.platform.events import Event


def to_outbox(group: Group, event: de.GroupEvent) -> Event:
    """The outbox event for one domain event of `group`."""
    return new_event(group.group_id, payload(group, event))


def _captured(group: Group, payment_id: str) -> bool:
    """Whether the provider captured `payment_id` at once (it cannot hold money) rather than
    holding it: recorded on the attempt when the payment succeeded."""
    attempt = group.attempt_by_payment(payment_id)
    return attempt is not None and attempt.captured


def payload(group: Group, event: de.GroupEvent) -> Message:
    """The protobuf payload of one domain event."""
    cur = group.currency_code
    match event:
        case de.Created():
            return ev.GroupCreated(
                group_id=group.group_id,
                host_user_id=group.host_user_id,
                merchant_id=group.merchant_id,
                total=money(group.total_minor, cur),
                deadline=timestamp(group.deadline),
            )
        case de.MemberAdded(member_id=member_id):
            return ev.MemberAdded(
                group_id=group.group_id,
                member_id=member_id,
                role=ROLE_TO_PROTO[group.member(member_id).role],
            )
        case de.MemberRemoved(member_id=member_id):
            return ev.MemberRemoved(group_id=group.group_id, member_id=member_id)
        case de.Opened():
            return _opened(group)
        case de.MemberPaid():
            return ev.MemberPaid(
                group_id=group.group_id,
                member_id=event.member_id,
                payment_id=event.payment_id,
                amount=money(event.amount_minor, cur),
                remaining_members=event.remaining_members,
                captured=_captured(group, event.payment_id),
            )
        case de.FullyPaid():
            return ev.GroupFullyPaid(group_id=group.group_id, total=money(group.total_minor, cur))
        case de.Finalized():
            return _finalized(group)
        case de.Expired():
            return ev.GroupExpired(
                group_id=group.group_id, payment_ids=list(event.payment_ids), reason=event.reason
            )
        case de.Cancelled():
            return ev.GroupCancelled(
                group_id=group.group_id,
                payment_ids=list(event.payment_ids),
                reason=event.reason,
                actor=event.actor,
            )
        case de.Confirmed():
            return ev.GroupConfirmed(group_id=group.group_id, order_id=event.order_id)
        case de.HostFallback():
            return _host_fallback(group)
        case de.ReminderDue(member_id=member_id):
            attempt = group.current_attempt(group.member(member_id))
            return ev.PaymentReminderDue(
                group_id=group.group_id,
                member_id=member_id,
                payment_link=attempt.payment_link if attempt else "",
                deadline=timestamp(group.deadline),
            )
    raise TypeError(f"no payload for {event!r}")  # pragma: no cover


def _opened(group: Group) -> ev.GroupOpened:
    invitations = []
    for m in group.members:
        attempt = group.current_attempt(m)
        if not m.required or attempt is None:
            continue
        invitations.append(
            ev.MemberInvitation(
                member_id=m.member_id,
                share=money(m.share_minor, group.currency_code),
                payment_id=attempt.payment_id,
                payment_link=attempt.payment_link,
            )
        )
    return ev.GroupOpened(
        group_id=group.group_id,
        deadline=timestamp(group.deadline),
        invitations=invitations,
        total=money(group.total_minor, group.currency_code),
    )


def _finalized(group: Group) -> ev.GroupFinalized:
    return ev.GroupFinalized(
        group_id=group.group_id,
        merchant_id=group.merchant_id,
        items=[line_to_proto(line) for line in group.items],
        fees_minor=group.fees_minor,
        tax_minor=group.tax_minor,
        tip_minor=group.tip_minor,
        total=money(group.total_minor, group.currency_code),
        shares=[
            ev.FinalizedShare(
                member_id=a.member_id,
                payment_id=a.payment_id,
                amount=money(a.amount_minor, group.currency_code),
            )
            for a in group.attempts
            if a.status is AttemptStatus.SUCCEEDED
        ],
        host_user_id=group.host_user_id,
    )


def _host_fallback(group: Group) -> ev.HostFallbackRequested:
    host = group.host
    attempt = group.current_attempt(host)
    return ev.HostFallbackRequested(
        group_id=group.group_id,
        host_member_id=host.member_id,
        amount=money(host.share_minor - host.paid_minor, group.currency_code),
        payment_id=attempt.payment_id if attempt else "",
        payment_link=attempt.payment_link if attempt else "",
        grace_deadline=timestamp(group.grace_deadline),
    )
