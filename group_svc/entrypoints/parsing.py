"""Request validation: protobuf requests in, commands out, INVALID_ARGUMENT with field
violations for anything malformed."""

from __future__ import annotations

import re
from datetime import datetime

from group_svc.adapters.proto_mapping import (
    FALLBACK_FROM_PROTO,
    SPLIT_FROM_PROTO,
    from_timestamp,
    provider_name,
    spec_from_proto,
)
from group_svc.domain.model import MAX_MEMBERS, CartLine, FallbackPolicy, NewMember
from group_svc.domain.split import ShareSpec, SplitMode
from group_svc.service_layer.commands import CreateGroup
from mppo.group.v1 import group_pb2, group_service_pb2
from mppo.platform.errors import FieldViolation, InvalidArgumentError
from mppo.platform.identity import Caller
from mppo.platform.money import exponent

#: Largest group total accepted, in minor units (keeps every sum far inside int64).
MAX_TOTAL_MINOR = 10**13
MAX_QUANTITY = 10_000
MAX_LINES = 200
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def member_input(
    member: group_pb2.MemberInput, label: str, bad: list[FieldViolation], user_id: str = ""
) -> NewMember:
    """A MemberInput as a NewMember, collecting violations."""
    if not member.display_name.strip():
        bad.append(FieldViolation(f"{label}.display_name", "required"))
    email = member.email.strip()
    if email and ("@" not in email or len(email) > 254 or any(c.isspace() for c in email)):
        bad.append(FieldViolation(f"{label}.email", "not an e-mail address"))
    phone = member.phone.strip()
    if phone and not _PHONE.match(phone):
        bad.append(FieldViolation(f"{label}.phone", "E.164, e.g. +14155550100"))
    provider = provider_name(member.provider)
    if provider is None:
        bad.append(FieldViolation(f"{label}.provider", "not a known provider"))
    return NewMember(
        display_name=member.display_name.strip(),
        email=email,
        phone=phone,
        user_id=user_id or member.user_id.strip(),
        share_spec=spec_from_proto(member.share_spec),
        provider=provider or "",
    )


def split_mode(value: group_pb2.SplitMode.ValueType, bad: list[FieldViolation]) -> SplitMode:
    """The split mode, or a violation for an unset/unknown one."""
    mode = SPLIT_FROM_PROTO.get(value)
    if mode is None:
        bad.append(FieldViolation("split_mode", "required"))
        return SplitMode.EQUAL
    return mode


def update_split(
    request: group_service_pb2.UpdateSplitRequest,
) -> tuple[SplitMode, dict[str, ShareSpec], dict[str, str]]:
    """An UpdateSplitRequest's mode, each member's split parameter by member id, and the
    request entry naming each member (``shares[i]``, for the domain's violations)."""
    bad: list[FieldViolation] = []
    mode = split_mode(request.split_mode, bad)
    specs: dict[str, ShareSpec] = {}
    labels: dict[str, str] = {}
    for i, share in enumerate(request.shares):
        label = f"shares[{i}]"
        member_id = share.member_id.strip()
        if not member_id:
            bad.append(FieldViolation(f"{label}.member_id", "required"))
            continue
        if member_id in specs:
            bad.append(FieldViolation(f"{label}.member_id", "duplicate member"))
            continue
        specs[member_id] = spec_from_proto(share.share_spec)
        labels[member_id] = label
    if bad:
        raise InvalidArgumentError("invalid split", bad)
    return mode, specs, labels


def required_id(value: str, field_name: str) -> str:
    """`value` stripped; INVALID_ARGUMENT naming `field_name` ("required") when blank."""
    if not value.strip():
        raise InvalidArgumentError(
            f"{field_name} required", [FieldViolation(field_name, "required")]
        )
    return value.strip()


def create_group(
    request: group_service_pb2.CreateGroupRequest, caller: Caller, now: datetime
) -> CreateGroup:
    """Validate a CreateGroupRequest from `caller` (the host-to-be, an end user)."""
    bad: list[FieldViolation] = []
    if not request.merchant_id.strip():
        bad.append(FieldViolation("merchant_id", "required"))
    if not request.currency_code.strip():
        bad.append(FieldViolation("currency_code", "required"))
    else:
        try:
            exponent(request.currency_code, "currency_code")
        except InvalidArgumentError as exc:
            bad.extend(exc.violations)
    if not request.items:
        bad.append(FieldViolation("items", "the cart is empty; at least one line"))
    if len(request.items) > MAX_LINES:
        bad.append(FieldViolation("items", f"at most {MAX_LINES} lines"))
    seen: set[str] = set()
    items: list[CartLine] = []
    for i, line in enumerate(request.items):
        label = f"items[{i}]"
        if not line.line_id:
            bad.append(FieldViolation(f"{label}.line_id", "required"))
        elif line.line_id in seen:
            bad.append(FieldViolation(f"{label}.line_id", "duplicate line id"))
        seen.add(line.line_id)
        if not line.sku.strip():
            bad.append(FieldViolation(f"{label}.sku", "required"))
        if not 1 <= line.quantity <= MAX_QUANTITY:
            bad.append(FieldViolation(f"{label}.quantity", f"1 to {MAX_QUANTITY}"))
        if line.unit_price_minor <= 0:
            bad.append(FieldViolation(f"{label}.unit_price_minor", "must be greater than zero"))
        items.append(
            CartLine(line.line_id, line.sku, line.name, line.quantity, line.unit_price_minor)
        )
    for name in ("fees_minor", "tax_minor", "tip_minor"):
        if getattr(request, name) < 0:
            bad.append(FieldViolation(name, "must not be negative"))
    total = sum(max(i.cost_minor, 0) for i in items)
    total += max(request.fees_minor, 0) + max(request.tax_minor, 0) + max(request.tip_minor, 0)
    if total > MAX_TOTAL_MINOR:
        bad.append(FieldViolation("items", f"the total exceeds {MAX_TOTAL_MINOR} minor units"))
    mode = split_mode(request.split_mode, bad)
    fallback = FALLBACK_FROM_PROTO.get(request.fallback_policy)
    if fallback is None:
        bad.append(FieldViolation("fallback_policy", "required"))
    deadline: datetime | None = None  # unset: the service's default span from now
    if request.HasField("deadline"):
        deadline = from_timestamp(request.deadline)
        if deadline <= now:
            bad.append(FieldViolation("deadline", "must be in the future"))
    if len(request.members) + 1 > MAX_MEMBERS:
        bad.append(FieldViolation("members", f"at most {MAX_MEMBERS} members including the host"))
    host = member_input(request.host, "host", bad, user_id=caller.user_id)
    members = [member_input(m, f"members[{i}]", bad) for i, m in enumerate(request.members)]
    if bad:
        raise InvalidArgumentError("invalid group", bad)
    return CreateGroup(
        caller=caller,
        merchant_id=request.merchant_id.strip(),
        currency_code=request.currency_code,
        items=items,
        fees_minor=request.fees_minor,
        tax_minor=request.tax_minor,
        tip_minor=request.tip_minor,
        split_mode=mode,
        fallback_policy=fallback or FallbackPolicy.CANCEL,
        deadline=deadline,
        host=host,
        members=members,
    )
