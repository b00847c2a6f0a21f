"""The members' contact details, fetched from the group service (`GetGroupContacts`).

Events carry no personal data; addresses are read over gRPC when needed and kept only in
memory for the delivery at hand.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from mppo.group.v1 import group_pb2, group_service_pb2, group_service_pb2_grpc
from mppo.platform.errors import UnavailableError
from mppo.platform.identity import service_metadata
from mppo.platform.telemetry import traced_channel
from notification_svc.domain.model import Contact, Role

_ROLES = {group_pb2.MEMBER_ROLE_HOST: Role.HOST, group_pb2.MEMBER_ROLE_GUEST: Role.GUEST}


class ContactDirectory(Protocol):
    """Where contacts come from."""

    async def contacts(self, group_id: str) -> list[Contact]:
        """Every member of the group with their contact details ([] for an unknown group)."""


class GrpcContactDirectory:
    """Reads contacts from the group service."""

    def __init__(self, addr: str, *, timeout: float = 5.0) -> None:
        self._addr = addr
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> group_service_pb2_grpc.GroupServiceAsyncStub:
        if self._channel is None:
            self._channel = traced_channel(self._addr)
        return group_service_pb2_grpc.GroupServiceStub(self._channel)

    async def contacts(self, group_id: str) -> list[Contact]:
        """Every member of the group; UnavailableError when the group service does not answer."""
        try:
            reply = await self._stub().GetGroupContacts(
                group_service_pb2.GetGroupContactsRequest(group_id=group_id),
                metadata=service_metadata("notification"),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise UnavailableError(f"group service: GetGroupContacts {exc.code().name}") from None
        return [
            Contact(
                member_id=c.member_id,
                display_name=c.display_name,
                email=c.email,
                role=_ROLES.get(c.role, Role.UNKNOWN),
            )
            for c in reply.contacts
        ]

    async def close(self) -> None:
        """Close the channel."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(None)
