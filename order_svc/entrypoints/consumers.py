"""Event handlers: `group.finalized` becomes an order (once per group)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from mppo.group.v1 import group_events_pb2
from mppo.platform.events import Event, decode
from mppo.platform.logs import bind_ids
from order_svc.service_layer.messages import order_from
from order_svc.service_layer.orders import create_order

logger = logging.getLogger(__name__)

DURABLE = "order-groups"
STREAM = "MPPO_GROUP"
SUBJECTS = ("group.finalized",)


def group_finalized_handler(
    wake: Callable[[], None],
) -> Callable[[AsyncSession, Event], Any]:
    """The inbox handler; `wake` tells the saga runner once the transaction commits."""

    async def handle(session: AsyncSession, event: Event) -> None:
        message = decode(event, group_events_pb2.GroupFinalized)
        with bind_ids(group_id=message.group_id):
            if not message.group_id:
                logger.error("group.finalized %s without a group id; ignored", event.event_id)
                return
            order = order_from(message)
            order_id, created = await create_order(session, order)
            if created:
                sa_event.listen(session.sync_session, "after_commit", lambda _s: wake(), once=True)
            logger.info(
                "group.finalized %s → order %s (%s)",
                event.event_id,
                order_id,
                "new" if created else "existing",
            )

    return handle
