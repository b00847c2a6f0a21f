"""Redis aids for orders: a per-order lock and a cache of finished orders.

Both are aids only (docs/design.md §2): with Redis down the lock is treated as acquired
(Postgres leases and version checks keep the saga correct) and the cache misses.
"""

from __future__ import annotations

import logging
import uuid

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class OrderLocks:
    """`SET NX PX` locks with a token, released only by their holder."""

    def __init__(self, client: aioredis.Redis, prefix: str = "") -> None:
        self._client = client
        self._prefix = prefix

    def _key(self, order_id: str) -> str:
        return f"{self._prefix}order-lock:{order_id}"

    async def acquire(self, order_id: str, ttl_seconds: float) -> str | None:
        """A token when the lock is ours (or Redis is down), None when another holds it."""
        token = uuid.uuid4().hex
        try:
            ok = await self._client.set(
                self._key(order_id), token, nx=True, px=max(int(ttl_seconds * 1000), 1)
            )
        except Exception as exc:
            logger.warning("order lock unavailable (%r); relying on the database lease", exc)
            return token
        return token if ok else None

    async def release(self, order_id: str, token: str) -> None:
        """Release the lock if `token` still holds it."""
        try:
            await self._client.eval(_RELEASE, 1, self._key(order_id), token)
        except Exception as exc:
            logger.warning("order lock release failed: %r", exc)


class OrderStatusCache:
    """Serialized Order messages of finished orders (they never change again)."""

    def __init__(self, client: aioredis.Redis, prefix: str = "", ttl_seconds: int = 3600) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl_seconds

    def _key(self, order_id: str) -> str:
        return f"{self._prefix}order-status:{order_id}"

    async def get(self, order_id: str) -> bytes | None:
        """The cached order, or None."""
        try:
            value = await self._client.get(self._key(order_id))
        except Exception as exc:
            logger.warning("order cache unavailable: %r", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, order_id: str, order: bytes) -> None:
        """Cache a finished order."""
        try:
            await self._client.set(self._key(order_id), order, ex=self._ttl)
        except Exception as exc:
            logger.warning("order cache unavailable: %r", exc)
