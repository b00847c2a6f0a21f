"""Who may see what about a group, asked of the group service, which owns membership.

Payment, order and notification records carry a group id but no membership. When an end user
(not one of our services) reads them, the service asks the group service for the group *as
that user* (`GetGroup` with the user's identity): the group service answers only members, so
its NOT_FOUND / PERMISSION_DENIED become our NOT_FOUND, and its answer says whether the user
is the host and which member slots are theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from mppo.group.v1 import group_service_pb2, group_service_pb2_grpc
from mppo.platform.errors import NotFoundError, UnavailableError
from mppo.platform.identity import USER_ID_KEY, Caller
from mppo.platform.telemetry import traced_channel

_DENIED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}


@dataclass(frozen=True)
class GroupView:
    """What one caller may see of one group."""

    #: our services see everything
    everything: bool
    is_host: bool
    #: the member ids that are the caller's own
    own_member_ids: frozenset[str]

    def may_see_member(self, member_id: str) -> bool:
        """The host and services see every member's records; a member sees their own."""
        return self.everything or self.is_host or member_id in self.own_member_ids


SERVICE_VIEW = GroupView(everything=True, is_host=False, own_member_ids=frozenset())


class GroupAccess:
    """Checks a caller's access to a group through the group service (one channel, lazily)."""

    def __init__(self, group_addr: str, service: str) -> None:
        self._addr = group_addr
        self._service = service
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> group_service_pb2_grpc.GroupServiceAsyncStub:
        if self._channel is None:
            self._channel = traced_channel(self._addr)
        return group_service_pb2_grpc.GroupServiceStub(self._channel)

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        """The caller's view of `group_id`; NotFoundError when they may not see it at all."""
        if caller.service and not caller.user_id:
            return SERVICE_VIEW
        metadata = ((USER_ID_KEY, caller.user_id),)
        try:
            reply = await self._stub().GetGroup(
                group_service_pb2.GetGroupRequest(group_id=group_id), metadata=metadata, timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _DENIED or exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise NotFoundError("group not found") from None
            raise UnavailableError("group service unavailable") from exc
        group = reply.group
        return GroupView(
            everything=False,
            is_host=group.host_user_id == caller.user_id,
            own_member_ids=frozenset(
                m.member_id for m in group.members if m.user_id == caller.user_id
            ),
        )

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close(None)
