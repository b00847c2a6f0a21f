"""The GroupService gRPC servicer: proto in, command to a handler, proto back; nothing else.

The runtime maps domain errors to gRPC status for every method. The caller's identity is
what the runtime verified (`identity.caller_from`). Mutating RPCs honour an
`idempotency-key`: the key is claimed in the same unit of work as the change (as the event
consumer records its inbox row), a replay returns the first response, and the same key with
other parameters is refused. OpenGroup and RetryPayment, whose handlers run several
transactions around payment-service calls, store their answer in the handler's last
transaction (`_finishing`); the other multi-step RPCs in one more after it (`_multi_step`).
Replays are found before any of that with a read that claims nothing (`_replay`).
CreateGroup first has the cart priced by the merchant (through the order service) with no
transaction open; when that cannot be done now it answers UNAVAILABLE and nothing is stored,
so the same key can be sent again.
"""

# ruff: noqa: N802 (method names are the gRPC RPC names)
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from group_svc.adapters.cache import GroupCache
from group_svc.adapters.proto_mapping import (
    ROLE_TO_PROTO,
    STATUS_FROM_PROTO,
    STATUS_TO_PROTO,
    group_to_proto,
    provider_name,
    redact,
    timestamp,
)
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import Group
from group_svc.entrypoints import parsing
from group_svc.service_layer import commands as c
from group_svc.service_layer.handlers import Finish, GroupHandlers, is_service, require_user
from group_svc.service_layer.unit_of_work import GroupUnitOfWork
from mppo.group.v1 import group_pb2, group_service_pb2_grpc
from mppo.group.v1 import group_service_pb2 as pb
from mppo.platform import idempotency, paging
from mppo.platform.errors import FieldViolation, InvalidArgumentError, NotFoundError
from mppo.platform.identity import Caller, caller_from
from mppo.platform.logs import bind_ids

Ctx = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)
SERVICE = "mppo.group.v1.GroupService"
MAX_PAGE = 100


class GroupServiceServicer(group_service_pb2_grpc.GroupServiceServicer):
    """Serves mppo.group.v1.GroupService."""

    def __init__(
        self,
        handlers: GroupHandlers,
        uow: Callable[[], GroupUnitOfWork],
        cache: GroupCache | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._h = handlers
        self._uow = uow
        self._cache = cache
        self._clock = clock

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
        """Run `work` (a handler and its response) in one unit of work, with the call's
        idempotency key claimed in it if the call sent one."""
        key = idempotency.key_for(_metadata(context), f"{SERVICE}/{method}", caller.label, request)
        async with self._uow() as uow:
            if key is not None:
                stored = await uow.idempotency.claim(key)
                if stored is not None:
                    return response_cls.FromString(stored)
            response = await work(uow)
            if key is not None:
                await uow.idempotency.complete(key, response.SerializeToString())
            await uow.commit()
        return response

    async def _replay(self, key: idempotency.IdempotencyKey | None) -> bytes | None:
        """The answer stored for an earlier call with `key` (a read: nothing is claimed)."""
        if key is None:
            return None
        async with self._uow() as uow:
            return await uow.idempotency.lookup(key)

    async def _multi_step(
        self,
        context: Ctx,
        method: str,
        caller: Caller,
        request: Message,
        group_id: str,
        run: Callable[[GroupUnitOfWork], Awaitable[Group]],
    ) -> group_pb2.GroupOrder:
        """For RPCs whose handler calls the payment service between its own transactions:
        replay an earlier call with this key, else run the handler, then store the group as
        it is now under the key."""
        key = idempotency.key_for(_metadata(context), f"{SERVICE}/{method}", caller.label, request)
        stored = await self._replay(key)
        if stored is not None:
            return group_pb2.GroupOrder.FromString(stored)
        await run(self._uow())

        async def view(uow: GroupUnitOfWork) -> group_pb2.GroupOrder:
            return self._view(await self._h.get_group(c.GetGroup(caller, group_id), uow), caller)

        return await self._mutate(context, method, caller, request, group_pb2.GroupOrder, view)

    async def _finishing(
        self,
        context: Ctx,
        method: str,
        caller: Caller,
        request: Message,
        run: Callable[[GroupUnitOfWork, Finish], Awaitable[Group]],
    ) -> group_pb2.GroupOrder:
        """`_multi_step` for handlers that take a `finish`: the answer (the group as their
        last transaction commits it) is stored under the key in that transaction, instead of
        in one more transaction after it."""
        key = idempotency.key_for(_metadata(context), f"{SERVICE}/{method}", caller.label, request)
        stored = await self._replay(key)
        if stored is not None:
            return group_pb2.GroupOrder.FromString(stored)
        answer: list[group_pb2.GroupOrder] = []

        async def finish(uow: GroupUnitOfWork, group: Group) -> None:
            view = self._view(group, caller)
            if key is not None:
                earlier = await uow.idempotency.store(key, view.SerializeToString())
                if earlier is not None:  # a concurrent call with the key answered first
                    view = group_pb2.GroupOrder.FromString(earlier)
            answer[:] = [view]

        group = await run(self._uow(), finish)
        return answer[0] if answer else self._view(group, caller)

    def _view(self, group: Group, caller: Caller) -> group_pb2.GroupOrder:
        return redact(
            group_to_proto(group, self._h.default_provider), caller.user_id, is_service(caller)
        )

    # ---- RPCs --------------------------------------------------------------------------

    async def CreateGroup(
        self, request: pb.CreateGroupRequest, context: Ctx
    ) -> pb.CreateGroupResponse:
        caller = caller_from(_metadata(context))
        require_user(caller)
        cmd = parsing.create_group(request, caller, self._clock())
        key = idempotency.key_for(
            _metadata(context), f"{SERVICE}/CreateGroup", caller.label, request
        )
        stored = await self._replay(key)  # a replay is answered without asking the merchant
        if stored is not None:
            return pb.CreateGroupResponse.FromString(stored)
        quoted = await self._h.quote_cart(cmd)

        async def work(uow: GroupUnitOfWork) -> pb.CreateGroupResponse:
            group = await self._h.create_group(quoted, uow)
            return pb.CreateGroupResponse(group=self._view(group, caller))

        return await self._mutate(
            context, "CreateGroup", caller, request, pb.CreateGroupResponse, work
        )

    async def GetGroup(self, request: pb.GetGroupRequest, context: Ctx) -> pb.GetGroupResponse:
        caller = caller_from(_metadata(context))
        service = is_service(caller)
        cache = self._cache
        with bind_ids(group_id=request.group_id):
            async with self._uow() as uow:
                version = await uow.groups.version(request.group_id)
                if version is None:
                    raise NotFoundError(f"group {request.group_id} not found")
                snapshot = await cache.get(request.group_id, version) if cache else None
                if snapshot is None:
                    group = await self._h.get_group(c.GetGroup(caller, request.group_id), uow)
                    snapshot = group_to_proto(group, self._h.default_provider)
                    if cache is not None:
                        await cache.put(snapshot)
            visible = service or caller.user_id in (
                snapshot.host_user_id,
                *(m.user_id for m in snapshot.members if m.user_id),
            )
            if not visible:
                raise NotFoundError(f"group {request.group_id} not found")
            return pb.GetGroupResponse(group=redact(snapshot, caller.user_id, service))

    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: Ctx
    ) -> pb.ListGroupsResponse:
        caller = caller_from(_metadata(context))
        require_user(caller)
        size = paging.page_size(request.page_size, default=20, maximum=MAX_PAGE)
        status: GroupStatus | None = None
        if request.status:
            status = STATUS_FROM_PROTO.get(request.status)
            if status is None:
                raise InvalidArgumentError("bad status", [FieldViolation("status", "unknown")])
        query = paging.query_of(request, caller.label)
        after = _group_position(request.page_token, query) if request.page_token else None
        async with self._uow() as uow:
            page = await self._h.list_groups(c.ListGroups(caller, size, status, after), uow)
        token = ""
        if page.next_after is not None:
            created, group_id = page.next_after
            token = paging.encode_token(query, created.isoformat(), group_id)
        return pb.ListGroupsResponse(
            groups=[self._view(g, caller) for g in page.groups], next_page_token=token
        )

    async def AddMembers(
        self, request: pb.AddMembersRequest, context: Ctx
    ) -> pb.AddMembersResponse:
        caller = caller_from(_metadata(context))
        bad: list[FieldViolation] = []
        if not request.members:
            bad.append(FieldViolation("members", "at least one member"))
        new = [parsing.member_input(m, f"members[{i}]", bad) for i, m in enumerate(request.members)]
        if bad:
            raise InvalidArgumentError("invalid members", bad)
        cmd = c.AddMembers(caller, request.group_id, new)

        async def work(uow: GroupUnitOfWork) -> pb.AddMembersResponse:
            group = await self._h.add_members(cmd, uow)
            return pb.AddMembersResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id):
            return await self._mutate(
                context, "AddMembers", caller, request, pb.AddMembersResponse, work
            )

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Ctx
    ) -> pb.RemoveMemberResponse:
        caller = caller_from(_metadata(context))
        member_id = parsing.required_id(request.member_id, "member_id")
        cmd = c.RemoveMember(caller, request.group_id, member_id)

        async def work(uow: GroupUnitOfWork) -> pb.RemoveMemberResponse:
            group = await self._h.remove_member(cmd, uow)
            return pb.RemoveMemberResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id, member_id=request.member_id):
            return await self._mutate(
                context, "RemoveMember", caller, request, pb.RemoveMemberResponse, work
            )

    async def JoinGroup(self, request: pb.JoinGroupRequest, context: Ctx) -> pb.JoinGroupResponse:
        caller = caller_from(_metadata(context))
        if not request.invite_token:
            raise InvalidArgumentError(
                "invite token required", [FieldViolation("invite_token", "required")]
            )
        provider = provider_name(request.provider)
        if provider is None:
            raise InvalidArgumentError(
                "unknown provider", [FieldViolation("provider", "not a known provider")]
            )
        cmd = c.JoinGroup(caller, request.group_id, request.invite_token, provider)
        if provider:  # may replace the member's payment link: the multi-step path
            with bind_ids(group_id=request.group_id):
                view = await self._finishing(
                    context,
                    "JoinGroup",
                    caller,
                    request,
                    lambda uow, finish: self._h.join_with_provider(cmd, uow, finish),
                )
            member_id = next((m.member_id for m in view.members if m.user_id == caller.user_id), "")
            return pb.JoinGroupResponse(group=view, member_id=member_id)

        async def work(uow: GroupUnitOfWork) -> pb.JoinGroupResponse:
            group, member = await self._h.join_group(cmd, uow)
            return pb.JoinGroupResponse(group=self._view(group, caller), member_id=member.member_id)

        with bind_ids(group_id=request.group_id):
            return await self._mutate(
                context, "JoinGroup", caller, request, pb.JoinGroupResponse, work
            )

    async def UpdateSplit(
        self, request: pb.UpdateSplitRequest, context: Ctx
    ) -> pb.UpdateSplitResponse:
        caller = caller_from(_metadata(context))
        mode, specs, labels = parsing.update_split(request)
        cmd = c.UpdateSplit(caller, request.group_id, mode, specs, labels, request.expected_version)

        async def work(uow: GroupUnitOfWork) -> pb.UpdateSplitResponse:
            group = await self._h.update_split(cmd, uow)
            return pb.UpdateSplitResponse(group=self._view(group, caller))

        with bind_ids(group_id=request.group_id):
            return await self._mutate(
                context, "UpdateSplit", caller, request, pb.UpdateSplitResponse, work
            )

    async def OpenGroup(self, request: pb.OpenGroupRequest, context: Ctx) -> pb.OpenGroupResponse:
        caller = caller_from(_metadata(context))
        cmd = c.OpenGroup(caller, request.group_id)
        with bind_ids(group_id=request.group_id):
            view = await self._finishing(
                context,
                "OpenGroup",
                caller,
                request,
                lambda uow, finish: self._h.open_group(cmd, uow, finish),
            )
        return pb.OpenGroupResponse(group=view)

    async def RetryPayment(
        self, request: pb.RetryPaymentRequest, context: Ctx
    ) -> pb.RetryPaymentResponse:
        caller = caller_from(_metadata(context))
        member_id = parsing.required_id(request.member_id, "member_id")
        cmd = c.RetryPayment(caller, request.group_id, member_id)
        with bind_ids(group_id=request.group_id, member_id=request.member_id):
            view = await self._finishing(
                context,
                "RetryPayment",
                caller,
                request,
                lambda uow, finish: self._h.retry_payment(cmd, uow, finish),
            )
        return pb.RetryPaymentResponse(group=view)

    async def ForceFinalize(
        self, request: pb.ForceFinalizeRequest, context: Ctx
    ) -> pb.ForceFinalizeResponse:
        caller = caller_from(_metadata(context))
        cmd = c.ForceFinalize(caller, request.group_id)
        with bind_ids(group_id=request.group_id):
            view = await self._multi_step(
                context,
                "ForceFinalize",
                caller,
                request,
                request.group_id,
                lambda uow: self._h.force_finalize(cmd, uow),
            )
        return pb.ForceFinalizeResponse(group=view)

    async def CancelGroup(
        self, request: pb.CancelGroupRequest, context: Ctx
    ) -> pb.CancelGroupResponse:
        caller = caller_from(_metadata(context))
        cmd = c.CancelGroup(caller, request.group_id, request.reason)
        with bind_ids(group_id=request.group_id):
            view = await self._multi_step(
                context,
                "CancelGroup",
                caller,
                request,
                request.group_id,
                lambda uow: self._h.cancel_group(cmd, uow),
            )
        return pb.CancelGroupResponse(group=view)

    async def GetGroupHistory(
        self, request: pb.GetGroupHistoryRequest, context: Ctx
    ) -> pb.GetGroupHistoryResponse:
        caller = caller_from(_metadata(context))
        size = paging.page_size(request.page_size)
        listing = paging.query_of(request, caller.label)
        after = 0
        if request.page_token:
            key = paging.decode_token(request.page_token, listing, 1)[0]
            if not key.isdigit():
                raise paging.invalid_token()
            after = int(key)
        query = c.GetGroupHistory(caller, request.group_id, size, after)
        async with self._uow() as uow:
            rows, more = await self._h.group_history(query, uow)
        return pb.GetGroupHistoryResponse(
            next_page_token=paging.encode_token(listing, str(more)) if more else "",
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
            ],
        )

    async def GetGroupContacts(
        self, request: pb.GetGroupContactsRequest, context: Ctx
    ) -> pb.GetGroupContactsResponse:
        caller = caller_from(_metadata(context))
        async with self._uow() as uow:
            members = await self._h.group_contacts(
                c.GetGroupContacts(caller, request.group_id), uow
            )
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


def _group_position(token: str, query: str) -> tuple[datetime, str]:
    """The (created, group id) position a ListGroups token continues from."""
    created, group_id = paging.decode_token(token, query, 2)
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        raise paging.invalid_token() from None
    if when.tzinfo is None:
        raise paging.invalid_token()
    return when, group_id
