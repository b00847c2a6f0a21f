"""Creating and reading orders (the saga itself is in saga.py)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.order.v1 import order_pb2
from mppo.platform.errors import NotFoundError
from mppo.platform.event_types import new_event
from mppo.platform.outbox import add_to_outbox
from order_svc.adapters.redis_aids import OrderStatusCache
from order_svc.adapters.repository import OrderRepository
from order_svc.domain.model import Order
from order_svc.service_layer.messages import created_event, to_proto

logger = logging.getLogger(__name__)


async def create_order(session: AsyncSession, order: Order) -> tuple[str, bool]:
    """Record `order` in the caller's transaction unless its group has one already.

    Returns (the group's order id, whether this call created it). order.created goes to the
    outbox in the same transaction. The unique group_id makes this safe against concurrent
    duplicates: the loser waits for the winner's commit and then finds its order.
    """
    repo = OrderRepository(session)
    order_id = await repo.add_if_absent(order)
    created = order_id == order.order_id
    if created:
        await add_to_outbox(session, new_event(order.order_id, created_event(order)))
        logger.info("order %s created for group %s", order.order_id, order.group_id)
    else:
        logger.info("group %s already has order %s", order.group_id, order_id)
    return order_id, created


class OrderQueries:
    """Reads: the database is the truth; finished orders are served from the cache."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache: OrderStatusCache) -> None:
        self._sessions = sessions
        self._cache = cache

    async def get(self, order_id: str) -> order_pb2.Order:
        """One order; NotFoundError when there is none."""
        cached = await self._cache.get(order_id)
        if cached is not None:
            return order_pb2.Order.FromString(cached)
        async with self._sessions() as session:
            order = await OrderRepository(session).get(order_id)
        if order is None:
            raise NotFoundError(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
        message = to_proto(order)
        if order.status.terminal:
            await self._cache.put(order_id, message.SerializeToString())
        return message

    async def get_by_group(self, group_id: str) -> order_pb2.Order:
        """The group's order; NotFoundError when there is none."""
        async with self._sessions() as session:
            order_id = await OrderRepository(session).id_for_group(group_id)
        if order_id is None:
            raise NotFoundError(f"group {group_id} has no order", reason="ORDER_NOT_FOUND")
        return await self.get(order_id)
