"""The events the group service publishes, built from the aggregate (payloads in
proto/mppo/group/v1/group_events.proto)."""

from __future__ import annotations

from group_svc.adapters.proto_mapping import ROLE_TO_PROTO, line_to_proto, money, timestamp
from group_svc.domain.model import AttemptStatus, Group, Member
from mppo.group.v1 import group_events_pb2 as ev
from mppo.platform.event_types import new_event
from mppo.platform.events import Event


def created(group: Group) -> Event:
    """group.created"""
    return new_event(
        group.group_id,
        ev.GroupCreated(
            group_id=group.group_id,
            host_user_id=group.host_user_id,
            merchant_id=group.merchant_id,
            total=money(group.total_minor, group.currency_code),
            deadline=timestamp(group.deadline),
        ),
    )


def member_added(group: Group, member: Member) -> Event:
    """member.added"""
    return new_event(
        group.group_id,
        ev.MemberAdded(
            group_id=group.group_id, member_id=member.member_id, role=ROLE_TO_PROTO[member.role]
        ),
    )


def member_removed(group: Group, member: Member) -> Event:
    """member.removed"""
    return new_event(
        group.group_id, ev.MemberRemoved(group_id=group.group_id, member_id=member.member_id)
    )


def opened(group: Group) -> Event:
    """group.opened: one invitation (share, payment id, link) per paying member."""
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
    return new_event(
        group.group_id,
        ev.GroupOpened(
            group_id=group.group_id,
            deadline=timestamp(group.deadline),
            invitations=invitations,
            total=money(group.total_minor, group.currency_code),
        ),
    )


def member_paid(group: Group, member: Member, payment_id: str, amount_minor: int) -> Event:
    """member.paid"""
    return new_event(
        group.group_id,
        ev.MemberPaid(
            group_id=group.group_id,
            member_id=member.member_id,
            payment_id=payment_id,
            amount=money(amount_minor, group.currency_code),
            remaining_members=len(group.unpaid_required),
        ),
    )


def fully_paid(group: Group) -> Event:
    """group.fully_paid"""
    return new_event(
        group.group_id,
        ev.GroupFullyPaid(
            group_id=group.group_id, total=money(group.total_minor, group.currency_code)
        ),
    )


def finalized(group: Group) -> Event:
    """group.finalized: what the order service needs to place and capture the order."""
    return new_event(
        group.group_id,
        ev.GroupFinalized(
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
        ),
    )


def expired(group: Group, payment_ids: list[str] | None = None) -> Event:
    """group.expired (payment_ids: the holds to release; every payment by default)."""
    return new_event(
        group.group_id,
        ev.GroupExpired(
            group_id=group.group_id,
            payment_ids=group.payment_ids if payment_ids is None else payment_ids,
            reason=group.close_reason,
        ),
    )


def cancelled(group: Group, actor: str) -> Event:
    """group.cancelled"""
    return new_event(
        group.group_id,
        ev.GroupCancelled(
            group_id=group.group_id,
            payment_ids=group.payment_ids,
            reason=group.close_reason,
            actor=actor,
        ),
    )


def confirmed(group: Group) -> Event:
    """group.confirmed"""
    return new_event(
        group.group_id, ev.GroupConfirmed(group_id=group.group_id, order_id=group.order_id)
    )


def host_fallback(group: Group) -> Event:
    """group.host_fallback: the host's new share, payment link and grace deadline."""
    host = group.host
    attempt = group.current_attempt(host)
    return new_event(
        group.group_id,
        ev.HostFallbackRequested(
            group_id=group.group_id,
            host_member_id=host.member_id,
            amount=money(host.share_minor - host.paid_minor, group.currency_code),
            payment_id=attempt.payment_id if attempt else "",
            payment_link=attempt.payment_link if attempt else "",
            grace_deadline=timestamp(group.grace_deadline),
        ),
    )


def reminder_due(group: Group, member: Member) -> Event:
    """group.reminder_due for one unpaid member."""
    attempt = group.current_attempt(member)
    return new_event(
        group.group_id,
        ev.PaymentReminderDue(
            group_id=group.group_id,
            member_id=member.member_id,
            payment_link=attempt.payment_link if attempt else "",
            deadline=timestamp(group.deadline),
        ),
    )
