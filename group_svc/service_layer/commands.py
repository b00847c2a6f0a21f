"""Use cases behind the GroupService RPCs. Each runs in the caller's unit of work (so the
servicer can claim an idempotency key in the same transaction) and returns the group.

Authorization (ARCHITECTURE.md §7): only the host changes, opens, cancels or force-finalizes
a group; members see only groups they belong to. Someone who may not see a group gets
NOT_FOUND (its existence is not revealed); a member who may see it but not change it gets
PERMISSION_DENIED.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import (
    CartLine,
    FallbackOutcome,
    FallbackPolicy,
    Group,
    HistoryEntry,
    Member,
    MemberStatus,
    NewMember,
    Role,
    check_member_list,
)
from group_svc.domain.split import ShareSpec, SplitMode
from group_svc.service_layer import events
from group_svc.service_layer.unit_of_work import Deps, GroupUnitOfWork
from mppo.platform.errors import (
    ConflictError,
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
)
from mppo.platform.identity import Caller


@dataclass(frozen=True)
class CreateGroupInput:
    """A validated CreateGroupRequest."""

    merchant_id: str
    currency_code: str
    items: list[CartLine]
    fees_minor: int
    tax_minor: int
    tip_minor: int
    split_mode: SplitMode
    fallback_policy: FallbackPolicy
    deadline: datetime
    host: NewMember
    members: list[NewMember]


def require_user(caller: Caller) -> str:
    """The end user's id; services may not act as a user."""
    if not caller.user_id:
        raise PermissionDeniedError("this call needs an end user's identity")
    return caller.user_id


def check_visible(group: Group | None, caller: Caller, group_id: str) -> Group:
    """The group if the caller may see it; NotFoundError otherwise."""
    if group is None or not (
        (caller.service and not caller.user_id) or group.is_visible_to(caller.user_id)
    ):
        raise NotFoundError(f"group {group_id} not found")
    return group


def check_host(group: Group | None, caller: Caller, group_id: str) -> Group:
    """The group if the caller is its host."""
    visible = check_visible(group, caller, group_id)
    if caller.user_id != visible.host_user_id:
        raise PermissionDeniedError("only the host can do this", reason="HOST_ONLY")
    return visible


async def load_for_host(uow: GroupUnitOfWork, caller: Caller, group_id: str) -> Group:
    """Lock and return a group the caller hosts."""
    require_user(caller)
    return check_host(await uow.groups.get(group_id, lock=True), caller, group_id)


async def create_group(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, data: CreateGroupInput
) -> Group:
    """A new DRAFT group; the caller becomes the host."""
    user_id = require_user(caller)
    now = deps.clock()
    check_member_list(
        [(data.host.email, user_id), *[(m.email, m.user_id) for m in data.members]],
        skip=1,
    )
    group = Group(
        group_id=str(uuid.uuid4()),
        host_user_id=user_id,
        merchant_id=data.merchant_id,
        currency_code=data.currency_code,
        items=data.items,
        fees_minor=data.fees_minor,
        tax_minor=data.tax_minor,
        tip_minor=data.tip_minor,
        split_mode=data.split_mode,
        fallback_policy=data.fallback_policy,
        deadline=data.deadline,
        created_at=now,
        updated_at=now,
    )
    host = data.host
    group.members.append(
        Member(
            member_id=str(uuid.uuid4()),
            position=0,
            role=Role.HOST,
            display_name=host.display_name,
            email=host.email,
            phone=host.phone,
            user_id=user_id,
            share_spec=host.share_spec,
            status=MemberStatus.JOINED,
            invite_token=secrets.token_urlsafe(24),
            joined_at=now,
        )
    )
    group.add_members(data.members, now, "members", recompute=False)
    group.recompute_shares(
        ["host.share_spec", *(f"members[{i}].share_spec" for i in range(len(data.members)))]
    )
    group.new_history.append(_created_entry(group, caller))
    await uow.groups.add(group)
    uow.collect(events.created(group), *(events.member_added(group, m) for m in group.members))
    return group


def _created_entry(group: Group, caller: Caller) -> HistoryEntry:
    return HistoryEntry(None, GroupStatus.DRAFT, "group created", caller.label, group.created_at)


async def get_group(uow: GroupUnitOfWork, caller: Caller, group_id: str) -> Group:
    """A group the caller may see."""
    return check_visible(await uow.groups.get(group_id), caller, group_id)


async def add_members(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str, new: list[NewMember]
) -> Group:
    """Host adds guests to a DRAFT group."""
    group = await load_for_host(uow, caller, group_id)
    added = group.add_members(new, deps.clock(), "members")
    await uow.groups.save(group, new_members={m.member_id for m in added})
    uow.collect(*(events.member_added(group, m) for m in added))
    return group


async def remove_member(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str, member_id: str
) -> Group:
    """Host removes a guest from a DRAFT group."""
    group = await load_for_host(uow, caller, group_id)
    removed = group.remove_member(member_id, deps.clock())
    await uow.groups.save(group)
    uow.collect(events.member_removed(group, removed))
    return group


async def update_split(
    uow: GroupUnitOfWork,
    deps: Deps,
    caller: Caller,
    group_id: str,
    mode: SplitMode,
    specs: dict[str, ShareSpec],
    labels: dict[str, str],
    expected_version: int,
) -> Group:
    """Host changes the split of a DRAFT group."""
    group = await load_for_host(uow, caller, group_id)
    if expected_version and expected_version != group.version:
        raise ConflictError(
            f"the group is at version {group.version}, not {expected_version}",
            reason="VERSION_MISMATCH",
        )
    group.update_split(mode, specs, labels, deps.clock())
    await uow.groups.save(group)
    return group


async def join_group(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str, invite_token: str
) -> tuple[Group, Member]:
    """A user accepts an invitation."""
    user_id = require_user(caller)
    group = await uow.groups.get(group_id, lock=True)
    if group is None:
        raise NotFoundError(f"group {group_id} not found")
    member = group.join(invite_token, user_id, deps.clock())
    await uow.groups.save(group)
    return group, member


async def freeze_for_opening(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str
) -> None:
    """First step of OpenGroup: freeze the shares and plan one attempt per paying member."""
    group = await load_for_host(uow, caller, group_id)
    if group.status is GroupStatus.DRAFT and group.frozen_at is None:
        group.freeze(deps.clock())
        await uow.groups.save(group)
    elif group.status is not GroupStatus.DRAFT and group.status is not GroupStatus.OPEN:
        raise FailedPreconditionError(f"the group is {group.status}", reason="GROUP_NOT_DRAFT")


async def retry_payment(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str, member_id: str
) -> None:
    """Plan a fresh attempt for a member whose payment failed (the member or the host)."""
    require_user(caller)
    group = check_visible(await uow.groups.get(group_id, lock=True), caller, group_id)
    member = group.member(member_id)
    if caller.user_id not in (group.host_user_id, member.user_id):
        raise PermissionDeniedError("only the member or the host can retry this payment")
    group.retry_payment(member_id, deps.clock())
    await uow.groups.save(group)


async def force_finalize(uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str) -> Group:
    """Host applies the fallback now. Applying it again changes nothing."""
    group = await load_for_host(uow, caller, group_id)
    if group.status is not GroupStatus.OPEN:
        raise FailedPreconditionError(
            f"only an OPEN group can be force-finalized; this one is {group.status}",
            reason="GROUP_NOT_OPEN",
        )
    if group.fallback_at is not None:
        return group  # the host already covers the rest; the grace period runs
    outcome = group.apply_fallback(
        caller.label, "force-finalized by the host", deps.settings.host_grace, deps.clock()
    )
    await uow.groups.save(group)
    if outcome is FallbackOutcome.EXPIRED:
        uow.collect(events.expired(group))
    return group


async def cancel_group(
    uow: GroupUnitOfWork, deps: Deps, caller: Caller, group_id: str, reason: str
) -> Group:
    """Host cancels a DRAFT or OPEN group; holds are released by the payment service."""
    group = await load_for_host(uow, caller, group_id)
    if group.status is GroupStatus.PENDING:
        raise FailedPreconditionError(
            "the order is being placed; it can no longer be cancelled", reason="GROUP_PENDING"
        )
    group.cancel(reason.strip() or "cancelled by the host", caller.label, deps.clock())
    await uow.groups.save(group)
    uow.collect(events.cancelled(group, caller.label))
    return group
