"""The NotificationService gRPC servicer: thin, proto in, command to the service layer, proto back.

``ListNotifications`` needs a caller identity (a user via the gateway, or one of our
services): the host of a group sees all of its notifications, a member only their own,
anyone else none (the group service decides who is who). It returns ids, kinds, channels and
delivery states only, never addresses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mppo.notification.v1 import notification_service_pb2 as pb
from mppo.notification.v1 import notification_service_pb2_grpc
from mppo.platform import paging
from mppo.platform.identity import caller_from
from notification_svc.adapters.mailer import message_id
from notification_svc.domain.model import Channel, Kind, Notification, Status
from notification_svc.service_layer.commands import ListNotifications
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

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


def to_proto(row: Notification) -> pb.Notification:
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


ListHandler = Callable[
    [ListNotifications, NotificationUnitOfWork], Awaitable[tuple[list[Notification], str]]
]


class NotificationServiceServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """Serves mppo.notification.v1.NotificationService (errors are mapped by the runtime)."""

    def __init__(
        self, uow: Callable[[], NotificationUnitOfWork], list_notifications: ListHandler
    ) -> None:
        self._uow = uow
        self._list = list_notifications

    async def ListNotifications(  # noqa: N802 (gRPC method name)
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        """A group's notifications, oldest first, optionally by member, kind and channel."""
        caller = caller_from(context.invocation_metadata())
        query = paging.query_of(request, caller.label)
        command = ListNotifications(
            caller=caller,
            group_id=request.group_id,
            member_id=request.member_id,
            kind=next((k for k, v in _KINDS.items() if v == request.kind), None),
            channel=next((c for c, v in _CHANNELS.items() if v == request.channel), None),
            page_size=paging.page_size(request.page_size),
            after=(
                paging.decode_token(request.page_token, query, 1)[0] if request.page_token else ""
            ),
        )
        found, more = await self._list(command, self._uow())
        return pb.ListNotificationsResponse(
            notifications=[to_proto(n) for n in found],
            next_page_token=paging.encode_token(query, more) if more else "",
        )
