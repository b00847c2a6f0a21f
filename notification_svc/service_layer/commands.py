"""Commands the notification service accepts (frozen dataclasses, free of transport types)."""

from __future__ import annotations

from dataclasses import dataclass

from mppo.platform.identity import Caller
from notification_svc.domain.model import Channel, Kind


@dataclass(frozen=True)
class ListNotifications:
    """A group's notifications as ``caller`` may see them, optionally filtered."""

    caller: Caller
    group_id: str
    member_id: str = ""
    kind: Kind | None = None
    channel: Channel | None = None
    #: one page: at most this many, after the notification `after` ("" from the start)
    page_size: int = 100
    after: str = ""
