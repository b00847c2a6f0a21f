"""Translation between the domain model and the mppo.group.v1 protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import (
    CartLine,
    FallbackPolicy,
    Group,
    MemberStatus,
    Role,
)
from group_svc.domain.split import ShareSpec, SplitMode
from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_pb2
from mppo.payment.v1 import payment_pb2

STATUS_TO_PROTO: Mapping[GroupStatus, group_pb2.GroupStatus.ValueType] = {
    GroupStatus.DRAFT: group_pb2.GROUP_STATUS_DRAFT,
    GroupStatus.OPEN: group_pb2.GROUP_STATUS_OPEN,
    GroupStatus.PENDING: group_pb2.GROUP_STATUS_PENDING,
    GroupStatus.CONFIRMED: group_pb2.GROUP_STATUS_CONFIRMED,
    GroupStatus.EXPIRED: group_pb2.GROUP_STATUS_EXPIRED,
    GroupStatus.CANCELLED: group_pb2.GROUP_STATUS_CANCELLED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
MEMBER_STATUS_TO_PROTO: Mapping[MemberStatus, group_pb2.MemberStatus.ValueType] = {
    MemberStatus.INVITED: group_pb2.MEMBER_STATUS_INVITED,
    MemberStatus.JOINED: group_pb2.MEMBER_STATUS_JOINED,
    MemberStatus.AWAITING_PAYMENT: group_pb2.MEMBER_STATUS_AWAITING_PAYMENT,
    MemberStatus.PAID: group_pb2.MEMBER_STATUS_PAID,
    MemberStatus.PAYMENT_FAILED: group_pb2.MEMBER_STATUS_PAYMENT_FAILED,
    MemberStatus.COVERED_BY_HOST: group_pb2.MEMBER_STATUS_COVERED_BY_HOST,
}
ROLE_TO_PROTO: Mapping[Role, group_pb2.MemberRole.ValueType] = {
    Role.HOST: group_pb2.MEMBER_ROLE_HOST,
    Role.GUEST: group_pb2.MEMBER_ROLE_GUEST,
}
SPLIT_FROM_PROTO: Mapping[group_pb2.SplitMode.ValueType, SplitMode] = {
    group_pb2.SPLIT_MODE_EQUAL: SplitMode.EQUAL,
    group_pb2.SPLIT_MODE_CUSTOM: SplitMode.CUSTOM,
    group_pb2.SPLIT_MODE_WEIGHTED: SplitMode.WEIGHTED,
    group_pb2.SPLIT_MODE_PERCENTAGE: SplitMode.PERCENTAGE,
    group_pb2.SPLIT_MODE_ITEMIZED: SplitMode.ITEMIZED,
}
SPLIT_TO_PROTO = {v: k for k, v in SPLIT_FROM_PROTO.items()}
FALLBACK_FROM_PROTO: Mapping[group_pb2.FallbackPolicy.ValueType, FallbackPolicy] = {
    group_pb2.FALLBACK_POLICY_HOST_PAYS_REMAINING: FallbackPolicy.HOST_PAYS_REMAINING,
    group_pb2.FALLBACK_POLICY_CANCEL: FallbackPolicy.CANCEL,
}
FALLBACK_TO_PROTO = {v: k for k, v in FALLBACK_FROM_PROTO.items()}


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp (None stays None)."""
    if moment is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    """An aware UTC datetime."""
    return ts.ToDatetime(tzinfo=UTC)


def provider_name(value: payment_pb2.Provider.ValueType) -> str | None:
    """A Provider as the payment service names it ("" for unspecified); None if unknown."""
    if value == payment_pb2.PROVIDER_UNSPECIFIED:
        return ""
    try:
        return payment_pb2.Provider.Name(value).removeprefix("PROVIDER_").lower()
    except ValueError:
        return None


def provider_to_proto(name: str) -> payment_pb2.Provider.ValueType:
    """A provider name as the Provider enum (unspecified for "")."""
    if not name:
        return payment_pb2.PROVIDER_UNSPECIFIED
    return payment_pb2.Provider.Value(f"PROVIDER_{name.upper()}")


def money(amount_minor: int, currency: str) -> money_pb2.Money:
    """A Money message."""
    return money_pb2.Money(amount_minor=amount_minor, currency_code=currency)


def spec_from_proto(spec: group_pb2.ShareSpec) -> ShareSpec:
    """The domain ShareSpec of a proto one."""
    which = spec.WhichOneof("spec")
    return ShareSpec(
        amount_minor=spec.amount_minor if which == "amount_minor" else None,
        weight=spec.weight if which == "weight" else None,
        basis_points=spec.basis_points if which == "basis_points" else None,
        line_ids=tuple(spec.line_ids),
    )


def spec_to_proto(spec: ShareSpec) -> group_pb2.ShareSpec:
    """The proto ShareSpec of a domain one."""
    out = group_pb2.ShareSpec(line_ids=list(spec.line_ids))
    if spec.amount_minor is not None:
        out.amount_minor = spec.amount_minor
    elif spec.weight is not None:
        out.weight = spec.weight
    elif spec.basis_points is not None:
        out.basis_points = spec.basis_points
    return out


def line_to_proto(line: CartLine) -> cart_pb2.LineItem:
    """A cart line as a LineItem."""
    return cart_pb2.LineItem(
        line_id=line.line_id,
        sku=line.sku,
        name=line.name,
        quantity=line.quantity,
        unit_price_minor=line.unit_price_minor,
    )


def group_to_proto(group: Group, default_provider: str = "") -> group_pb2.GroupOrder:
    """The full GroupOrder, contact details and invite tokens included (redact before
    showing it to anyone but the host). A member who named no provider pays with
    `default_provider` (the configured default), which their `provider` then reports."""
    cur = group.currency_code
    out = group_pb2.GroupOrder(
        group_id=group.group_id,
        host_user_id=group.host_user_id,
        merchant_id=group.merchant_id,
        status=STATUS_TO_PROTO[group.status],
        items=[line_to_proto(line) for line in group.items],
        fees_minor=group.fees_minor,
        tax_minor=group.tax_minor,
        tip_minor=group.tip_minor,
        total=money(group.total_minor, cur),
        split_mode=SPLIT_TO_PROTO[group.split_mode],
        fallback_policy=FALLBACK_TO_PROTO[group.fallback_policy],
        deadline=timestamp(group.deadline),
        amount_secured=money(group.amount_secured, cur),
        order_id=group.order_id,
        close_reason=group.close_reason,
        version=group.version,
        create_time=timestamp(group.created_at),
        update_time=timestamp(group.updated_at),
        grace_deadline=timestamp(group.grace_deadline),
    )
    for m in group.members:
        attempt = group.current_attempt(m)
        out.members.append(
            group_pb2.Member(
                member_id=m.member_id,
                user_id=m.user_id,
                display_name=m.display_name,
                role=ROLE_TO_PROTO[m.role],
                status=MEMBER_STATUS_TO_PROTO[m.status],
                share_spec=spec_to_proto(m.share_spec),
                share=money(m.share_minor, cur),
                amount_paid=money(m.paid_minor, cur),
                required=m.required,
                payment_id=attempt.payment_id if attempt else "",
                payment_link=attempt.payment_link if attempt else "",
                attempt=m.attempt,
                email=m.email,
                joined_at=timestamp(m.joined_at),
                paid_at=timestamp(m.paid_at),
                invite_token=m.invite_token,
                provider=provider_to_proto(m.provider or default_provider),
            )
        )
    return out


def redact(full: group_pb2.GroupOrder, viewer_user_id: str, service: bool) -> group_pb2.GroupOrder:
    """What `viewer_user_id` may see: the host and our services see everything; a member
    sees their own e-mail and payment link, and no invite tokens or others' e-mails/links."""
    if service or viewer_user_id == full.host_user_id:
        return full
    view = group_pb2.GroupOrder()
    view.CopyFrom(full)
    for member in view.members:
        member.invite_token = ""
        if member.user_id != viewer_user_id:
            member.email = ""
            member.payment_link = ""
    return view
