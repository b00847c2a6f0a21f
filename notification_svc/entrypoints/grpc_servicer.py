"""The NotificationService gRPC servicer: thin, proto in, query out, proto back.

``ListNotifications`` needs a caller identity (a user via the gateway, or one of our
services): the host of a group sees all of its notifications, a member only their own,
anyone else none (the group service decides who is who). It returns ids, kinds, channels and
delivery states only, never addresses.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.notification.v1 import notification_service_pb2 as pb
from mppo.notification.v1 import notification_service_pb2_grpc
from mppo.platform.errors import FieldViolation, InvalidArgumentError
from mppo.platform.identity import caller_from
from mppo.platform.membership import GroupAccess
from mppo.platform.rpc_status import grpc_errors
from notification_svc.adapters import repository
from notification_svc.adapters.mailer import message_id
from notification_svc.adapters.repository import NotificationRow
from notification_svc.domain.model import Channel, Kind, Status

Context = grpc.aio.ServicerContext[Any, Any]

_KINDS = {kind: pb.NotificationKind.Value(f"NOTIFICATION_KIND_{kind.value}") for kind in Kind}
_CHANNELS = {
    channel: pb.NotificationChannel.Value(f"NOTIFICATION_CHANNEL_{channel.value}")
    for channel in Channel
}
_STATUSES = {
    status: pb.NotificationStatus.Value(f"NOTIFICATION_STATUS_{status.value}") for status in Status
}


def _timestamp(row_time: Any) -> Timestamp | None:
    if row_time is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(row_time)
    return ts


def to_proto(row: NotificationRow) -> pb.Notification:
    """The wire form of a stored notification."""
    return pb.Notification(
        notification_id=row.notification_id,
        group_id=row.group_id,
        member_id=row.member_id,
        kind=_KINDS[row.kind],
        channel=_CHANNELS[row.channel],
        status=_STATUSES[row.status],
        event_id=row.event_id,
        attempts=row.attempts,
        create_time=_timestamp(row.created_at),
        sent_time=_timestamp(row.sent_at),
        event_type=row.event_type,
        last_error=row.last_error,
        delivery_id=(
            message_id(row.notification_id) if row.channel is Channel.EMAIL else row.notification_id
        ),
    )


class NotificationServiceServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """Serves mppo.notification.v1.NotificationService."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], access: GroupAccess) -> None:
        self._sessions = sessions
        self._access = access

    @grpc_errors
    async def ListNotifications(  # noqa: N802 (gRPC method name)
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        """A group's notifications, oldest first, optionally by member, kind and channel."""
        caller = caller_from(context.invocation_metadata())
        if not request.group_id:
            raise InvalidArgumentError(
                "group_id is required", [FieldViolation("group_id", "required")]
            )
        view = await self._access.view(caller, request.group_id)
        kind = next((k for k, v in _KINDS.items() if v == request.kind), None)
        channel = next((c for c, v in _CHANNELS.items() if v == request.channel), None)
        async with self._sessions() as session:
            rows = await repository.list_notifications(
                session,
                group_id=request.group_id,
                member_id=request.member_id,
                kind=kind,
                channel=channel,
            )
        return pb.ListNotificationsResponse(
            notifications=[to_proto(r) for r in rows if view.may_see_member(r.member_id)]
        )
