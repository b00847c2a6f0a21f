"""The GroupService gRPC servicer: thin, proto in, use case out, proto back.

Every method is wrapped with `@grpc_errors`; the caller's identity comes from metadata
(`x-mppo-user-id`, set by the gateway; `x-mppo-service` for our own services). Mutating RPCs
honour an `idempotency-key` (claimed in the same transaction as the change; a replay returns
the first response, the same key with other parameters is refused).
"""

# ruff: noqa: N802 (method names are the gRPC RPC names)
from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy import and_, or_, select

from group_svc.adapters.proto_mapping import (
    ROLE_TO_PROTO,
    STATUS_FROM_PROTO,
    STATUS_TO_PROTO,
    group_to_proto,
    redact,
    spec_from_proto,
    timestamp,
)
from group_svc.adapters.tables import group_members, group_orders
from group_svc.domain.lifecycle import GroupStatus
from group_svc.entrypoints import requests
from group_svc.service_layer import commands
from group_svc.service_layer.intents import complete_intents
from group_svc.service_layer.unit_of_work import Deps, GroupUnitOfWork
from mppo.group.v1 import group_pb2, group_service_pb2_grpc
from mppo.group.v1 import group_service_pb2 as pb
from mppo.platform import idempotency
from mppo.platform.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from mppo.platform.identity import Caller, caller_from
from mppo.platform.logs import bind_ids
from mppo.platform.rpc_status import grpc_errors

Ctx = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
SERVICE = "mppo.group.v1.GroupService"
MAX_PAGE = 100


class GroupServiceServicer(group_service_pb2_grpc.GroupServiceServicer):
    """Serves mppo.group.v1.GroupService."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # ---- helpers -----------------------------------------------------------------------

    async def _mutate(
        self,
        context: Ctx,
        method: str,
        caller: Caller,
        request: Message,
        response_cls: type[M],
        work: Callable[[GroupUnitOfWork], Awaitable[M]],
    ) -> M:
        """Run `work` in one transaction, with the call's idempotency key if it sent one."""
        key = idempotency.key_for(_metadata(context), f"{SERVICE}/{method}", caller.label, request)
        async with GroupUnitOfWork(self._deps) as uow:
            if key is not None:
                stored = await idempotency.claim(uow.session, key)
                if stored is not None:
                    return response_cls.FromString(stored)
            response = await work(uow)
            if key is not None:
                await idempotency.complete(uow.session, key, response.SerializeToString())
            await uow.commit()
        return response

    async def _replayed(
        self, context: Ctx, method: str, caller: Caller, request: Message, response_cls: type[M]
    ) -> tuple[idempotency.IdempotencyKey | None, M | None]:
        """For multi-step RPCs: the stored response of an earlier call with this key."""
        key = idempotency.key_for(_metadata(context), f"{SERVICE}/{method}", caller.label, request)
        if key is None:
            return None, None
        async with GroupUnitOfWork(self._deps) as uow:
            stored = await idempotency.claim(uow.session, key)
            # not committed: the claim is taken for real by the final step
        return key, (response_cls.FromString(stored) if stored is not None else None)

    def _view(self, group: Any, caller: Caller) -> group_pb2.GroupOrder:
        return redact(
            group_to_proto(group), caller.user_id, bool(caller.service and not caller.user_id)
        )

    async def _invalidate(self, group_id: str, version: int) -> None:
        if self._deps.cache is not None:
            await self._deps.cache.invalidate(group_id, version)

    async def _view_after(
        self, context: Ctx, method: str, caller: Caller, request: Message, key: Any, group_id: str
    ) -> group_pb2.GroupOrder:
        """Final step of multi-step RPCs: the group now, stored under the idempotency key."""

        async def work(uow: GroupUnitOfWork) -> group_pb2.GroupOrder:
            group = commands.check_visible(await uow.groups.get(group_id), caller, group_id)
            return self._view(group, caller)

        async with GroupUnitOfWork(self._deps) as uow:
            if key is not None:
                stored = await idempotency.claim(uow.session, key)
                if stored is not None:
                    return group_pb2.GroupOrder.FromString(stored)
            view = await work(uow)
            if key is not None:
                await idempotency.complete(uow.session, key, view.SerializeToString())
            await uow.commit()
        return view

    # ---- RPCs --------------------------------------------------------------------------

    @grpc_errors
    async def CreateGroup(
        self, request: pb.CreateGroupRequest, context: Ctx
    ) -> pb.CreateGroupResponse:
        caller = caller_from(_metadata(context))
        data = requests.create_group(request, commands.require_user(caller), self._deps.clock())

        async def work(uow: GroupUnitOfWork) -> pb.CreateGroupResponse:
            group = await commands.create_group(uow, self._deps, caller, data)
            return pb.CreateGroupResponse(group=self._view(group, caller))

        return await self._mutate(
            context, "CreateGroup", caller, request, pb.CreateGroupResponse, work
        )

    @grpc_errors
    async def GetGroup(self, request: pb.GetGroupRequest, context: Ctx) -> pb.GetGroupResponse:
        caller = caller_from(_metadata(context))
        service = bool(caller.service and not caller.user_id)
        cache = self._deps.cache
        with bind_ids(group_id=request.group_id):
            async with GroupUnitOfWork(self._deps) as uow:
                version = (
                    await uow.session.execute(
                        select(group_orders.c.version).where(
                            group_orders.c.group_id == request.group_id
                        )
                    )
                ).scalar()
                if version is None:
                    raise NotFoundError(f"group {request.group_id} not found")
                snapshot = await cache.get(request.group_id, version) if cache else None
                if snapshot is None:
                    group = await commands.get_group(uow, caller, request.group_id)
                    snapshot = group_to_proto(group)
                    if cache is not None:
                        await cache.put(snapshot)
            visible = service or caller.user_id in (
                snapshot.host_user_id,
                *(m.user_id for m in snapshot.members if m.user_id),
            )
            if not visible:
                raise NotFoundError(f"group {request.group_id} not found")
            return pb.GetGroupResponse(group=redact(snapshot, caller.user_id, service))

    @grpc_errors
    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: Ctx
    ) -> pb.ListGroupsResponse:
        caller = caller_from(_metadata(context))
        user_id = commands.require_user(caller)
        size = request.page_size or 20
        if not 1 <= size <= MAX_PAGE:
            raise InvalidArgumentError(
                "bad page size", [FieldViolation("page_size", f"1 to {MAX_PAGE}")]
            )
        member_of = select(group_members.c.group_id).where(group_members.c.user_id == user_id)
        query = select(group_orders.c.group_id, group_orders.c.created_at).where(
            or_(group_orders.c.host_user_id == user_id, group_orders.c.group_id.in_(member_of))
        )
        if request.status:
            status = STATUS_FROM_PROTO.get(request.status)
            if status is None:
                raise InvalidArgumentError("bad status", [FieldViolation("status", "unknown")])
            query = query.where(group_orders.c.status == status.value)
        if request.page_token:
            created, last_id = _decode_token(request.page_token)
            query = query.where(
                or_(
                    group_orders.c.created_at < created,
                    and_(group_orders.c.created_at == created, group_orders.c.group_id < last_id),
                )
            )
        query = query.order_by(group_orders.c.created_at.desc(), group_orders.c.group_id.desc())
        async with GroupUnitOfWork(self._deps) as uow:
            rows = (await uow.session.execute(query.limit(size + 1))).all()
            groups = []
            for row in rows[:size]:
                group = await uow.groups.get(row.group_id)
                if group is not None:
                    groups.append(self._view(group, caller))
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = base64.urlsafe_b64encode(
                f"{last.created_at.isoformat()}|{last.group_id}".encode()
            ).decode()
        return pb.ListGroupsResponse(groups=groups, next_page_token=token)

    @grpc_errors
    async def AddMembers(
        self, request: pb.AddMembersRequest, context: Ctx
    ) -> pb.AddMembersResponse:
        caller = caller_from(_metadata(context))
        bad: list[FieldViolation] = []
        if not request.members:
            bad.append(FieldViolation("members", "at least one member"))
        new = [
            requests.member_input(m, f"members[{i}]", bad) for i, m in enumerate(request.members)
        ]
        if bad:
            raise InvalidArgumentError("invalid members", bad)

        async def work(uow: GroupUnitOfWork) -> pb.AddMembersResponse:
            group = await commands.add_members(uow, self._deps, caller, request.group_id, new)
            return pb.AddMembersResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id):
            response = await self._mutate(
                context, "AddMembers", caller, request, pb.AddMembersResponse, work
            )
        await self._invalidate(request.group_id, response.group.version)
        return response

    @grpc_errors
    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Ctx
    ) -> pb.RemoveMemberResponse:
        caller = caller_from(_metadata(context))

        async def work(uow: GroupUnitOfWork) -> pb.RemoveMemberResponse:
            group = await commands.remove_member(
                uow, self._deps, caller, request.group_id, request.member_id
            )
            return pb.RemoveMemberResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id, member_id=request.member_id):
            return await self._mutate(
                context, "RemoveMember", caller, request, pb.RemoveMemberResponse, work
            )

    @grpc_errors
    async def JoinGroup(self, request: pb.JoinGroupRequest, context: Ctx) -> pb.JoinGroupResponse:
        caller = caller_from(_metadata(context))
        if not request.invite_token:
            raise InvalidArgumentError(
                "invite token required", [FieldViolation("invite_token", "required")]
            )

        async def work(uow: GroupUnitOfWork) -> pb.JoinGroupResponse:
            group, member = await commands.join_group(
                uow, self._deps, caller, request.group_id, request.invite_token
            )
            return pb.JoinGroupResponse(group=self._view(group, caller), member_id=member.member_id)

        with bind_ids(group_id=request.group_id):
            return await self._mutate(
                context, "JoinGroup", caller, request, pb.JoinGroupResponse, work
            )

    @grpc_errors
    async def UpdateSplit(
        self, request: pb.UpdateSplitRequest, context: Ctx
    ) -> pb.UpdateSplitResponse:
        caller = caller_from(_metadata(context))
        bad: list[FieldViolation] = []
        mode = requests.split_mode(request.split_mode, bad)
        specs = {}
        labels = {}
        for i, share in enumerate(request.shares):
            if share.member_id in specs:
                bad.append(FieldViolation(f"shares[{i}].member_id", "duplicate member"))
            specs[share.member_id] = spec_from_proto(share.share_spec)
            labels[share.member_id] = f"shares[{i}].share_spec"
        if bad:
            raise InvalidArgumentError("invalid split", bad)

        async def work(uow: GroupUnitOfWork) -> pb.UpdateSplitResponse:
            group = await commands.update_split(
                uow,
                self._deps,
                caller,
                request.group_id,
                mode,
                specs,
                labels,
                request.expected_version,
            )
            return pb.UpdateSplitResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id):
            return await self._mutate(
                context, "UpdateSplit", caller, request, pb.UpdateSplitResponse, work
            )

    @grpc_errors
    async def OpenGroup(self, request: pb.OpenGroupRequest, context: Ctx) -> pb.OpenGroupResponse:
        """Freeze (tx 1) → request the intents (payment service, idempotent) → open and
        publish group.opened (tx 2). A retry after any failure resumes safely."""
        caller = caller_from(_metadata(context))
        with bind_ids(group_id=request.group_id):
            key, replay = await self._replayed(
                context, "OpenGroup", caller, request, group_pb2.GroupOrder
            )
            if replay is not None:
                return pb.OpenGroupResponse(group=replay)
            async with GroupUnitOfWork(self._deps) as uow:
                await commands.freeze_for_opening(uow, self._deps, caller, request.group_id)
                await uow.commit()
            await complete_intents(self._deps, request.group_id, caller.label)
            view = await self._view_after(
                context, "OpenGroup", caller, request, key, request.group_id
            )
            return pb.OpenGroupResponse(group=view)

    @grpc_errors
    async def RetryPayment(
        self, request: pb.RetryPaymentRequest, context: Ctx
    ) -> pb.RetryPaymentResponse:
        caller = caller_from(_metadata(context))
        with bind_ids(group_id=request.group_id, member_id=request.member_id):
            key, replay = await self._replayed(
                context, "RetryPayment", caller, request, group_pb2.GroupOrder
            )
            if replay is not None:
                return pb.RetryPaymentResponse(group=replay)
            async with GroupUnitOfWork(self._deps) as uow:
                await commands.retry_payment(
                    uow, self._deps, caller, request.group_id, request.member_id
                )
                await uow.commit()
            await complete_intents(self._deps, request.group_id, caller.label)
            view = await self._view_after(
                context, "RetryPayment", caller, request, key, request.group_id
            )
            return pb.RetryPaymentResponse(group=view)

    @grpc_errors
    async def ForceFinalize(
        self, request: pb.ForceFinalizeRequest, context: Ctx
    ) -> pb.ForceFinalizeResponse:
        caller = caller_from(_metadata(context))
        with bind_ids(group_id=request.group_id):
            key, replay = await self._replayed(
                context, "ForceFinalize", caller, request, group_pb2.GroupOrder
            )
            if replay is not None:
                return pb.ForceFinalizeResponse(group=replay)
            async with GroupUnitOfWork(self._deps) as uow:
                group = await commands.force_finalize(uow, self._deps, caller, request.group_id)
                await uow.commit()
            if group.status is GroupStatus.OPEN:
                await complete_intents(self._deps, request.group_id, caller.label)
            view = await self._view_after(
                context, "ForceFinalize", caller, request, key, request.group_id
            )
            return pb.ForceFinalizeResponse(group=view)

    @grpc_errors
    async def CancelGroup(
        self, request: pb.CancelGroupRequest, context: Ctx
    ) -> pb.CancelGroupResponse:
        caller = caller_from(_metadata(context))

        async def work(uow: GroupUnitOfWork) -> pb.CancelGroupResponse:
            group = await commands.cancel_group(
                uow, self._deps, caller, request.group_id, request.reason
            )
            return pb.CancelGroupResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id):
            return await self._mutate(
                context, "CancelGroup", caller, request, pb.CancelGroupResponse, work
            )

    @grpc_errors
    async def GetGroupHistory(
        self, request: pb.GetGroupHistoryRequest, context: Ctx
    ) -> pb.GetGroupHistoryResponse:
        caller = caller_from(_metadata(context))
        async with GroupUnitOfWork(self._deps) as uow:
            await commands.get_group(uow, caller, request.group_id)
            rows = await uow.groups.history(request.group_id)
        return pb.GetGroupHistoryResponse(
            changes=[
                group_pb2.StatusChange(
                    from_status=(
                        STATUS_TO_PROTO[GroupStatus(r["from_status"])]
                        if r["from_status"]
                        else group_pb2.GROUP_STATUS_UNSPECIFIED
                    ),
                    to_status=STATUS_TO_PROTO[GroupStatus(r["to_status"])],
                    reason=r["reason"],
                    actor=r["actor"],
                    change_time=timestamp(r["changed_at"]),
                )
                for r in rows
            ]
        )

    @grpc_errors
    async def GetGroupContacts(
        self, request: pb.GetGroupContactsRequest, context: Ctx
    ) -> pb.GetGroupContactsResponse:
        caller = caller_from(_metadata(context))
        if caller.user_id or not caller.service:
            raise PermissionDeniedError("contacts are for our services only")
        async with GroupUnitOfWork(self._deps) as uow:
            members = await uow.groups.members(request.group_id)
        if not members:
            raise NotFoundError(f"group {request.group_id} not found")
        return pb.GetGroupContactsResponse(
            contacts=[
                pb.MemberContact(
                    member_id=m.member_id,
                    display_name=m.display_name,
                    email=m.email,
                    phone=m.phone,
                    role=ROLE_TO_PROTO[m.role],
                )
                for m in members
            ]
        )


def _metadata(context: Ctx) -> tuple[tuple[str, Any], ...]:
    return tuple(context.invocation_metadata() or ())


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, _, group_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(created), group_id
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgumentError(
            "bad page token", [FieldViolation("page_token", "use a token from a response")]
        ) from None
