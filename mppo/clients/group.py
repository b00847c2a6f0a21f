"""The one client of mppo.group.v1.GroupService, shared by payment, order and notification.

* :meth:`GroupClient.view` — who may see what about a group. Payment, order and notification
  records carry a group id but no membership; when an end user (not one of our services)
  reads them, we ask the group service for the group *as that user*: it answers only members,
  so its NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT become our NOT_FOUND, and its answer
  says whether the user is the host and which member slots are theirs.
* :meth:`GroupClient.contacts` — the members' contact details (our services only).
* :meth:`GroupClient.invite_tokens` — each member's invite token, for the group page link an
  invitation carries (our services only).
"""

from __future__ import annotations

from dataclasses import dataclass

from mppo.clients.channel import ServiceChannel
from mppo.group.v1 import group_service_pb2, group_service_pb2_grpc
from mppo.platform.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from mppo.platform.identity import Caller


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


class GroupClient:
    """Queries to the group service, as `caller` (our service's name)."""

    def __init__(self, addr: str, caller: str, *, timeout: float = 5.0) -> None:
        self._peer = ServiceChannel(addr, caller, timeout=timeout)

    def _stub(self) -> group_service_pb2_grpc.GroupServiceAsyncStub:
        return group_service_pb2_grpc.GroupServiceStub(self._peer.channel)

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        """The caller's view of `group_id`; NotFoundError when they may not see it at all."""
        if caller.service and not caller.user_id:
            return SERVICE_VIEW
        request = group_service_pb2.GetGroupRequest(group_id=group_id)
        metadata = self._peer.metadata(on_behalf_of=caller)
        try:
            reply = await self._peer.call(
                "GetGroup",
                lambda: self._stub().GetGroup(
                    request, metadata=metadata, timeout=self._peer.timeout
                ),
            )
        except (NotFoundError, PermissionDeniedError, InvalidArgumentError):
            raise NotFoundError("group not found") from None
        group = reply.group
        return GroupView(
            everything=False,
            is_host=group.host_user_id == caller.user_id,
            own_member_ids=frozenset(
                m.member_id for m in group.members if m.user_id == caller.user_id
            ),
        )

    async def contacts(self, group_id: str) -> list[group_service_pb2.MemberContact]:
        """Every member's contact details; [] for a group the service does not know."""
        request = group_service_pb2.GetGroupContactsRequest(group_id=group_id)
        md = self._peer.metadata()
        try:
            reply = await self._peer.call(
                "GetGroupContacts",
                lambda: self._stub().GetGroupContacts(
                    request, metadata=md, timeout=self._peer.timeout
                ),
            )
        except NotFoundError:
            return []
        return list(reply.contacts)

    async def invite_tokens(self, group_id: str) -> dict[str, str]:
        """Member id -> invite token (our services only; the capability of each member's group
        page link); {} for a group the service does not know."""
        request = group_service_pb2.GetGroupRequest(group_id=group_id)
        md = self._peer.metadata()
        try:
            reply = await self._peer.call(
                "GetGroup",
                lambda: self._stub().GetGroup(request, metadata=md, timeout=self._peer.timeout),
            )
        except NotFoundError:
            return {}
        return {m.member_id: m.invite_token for m in reply.group.members if m.invite_token}

    async def close(self) -> None:
        """Close the channel."""
        await self._peer.close()
