"""Redis fast paths: the payment-intent replay cache. Redis is never the source of truth:
every miss or Redis error falls back to Postgres."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)


class IntentCache:
    """(group, member, attempt) → payment id, so replays skip the insert path."""

    def __init__(self, client: aioredis.Redis, prefix: str = "", ttl_seconds: int = 24 * 3600):
        self._client = client
        self._prefix = prefix
        self._ttl = ttl_seconds

    def _name(self, group_id: str, member_id: str, attempt: int) -> str:
        return f"{self._prefix}mppo:payment:intent:{group_id}:{member_id}:{attempt}"

    async def get(self, group_id: str, member_id: str, attempt: int) -> str | None:
        """The payment id, or None (also when Redis is down)."""
        try:
            value = await self._client.get(self._name(group_id, member_id, attempt))
        except Exception as exc:
            logger.warning("payment intent cache unavailable: %s", exc)
            return None
        return value.decode() if isinstance(value, bytes) else None

    async def put(self, group_id: str, member_id: str, attempt: int, payment_id: str) -> None:
        """Remember a committed payment."""
        try:
            await self._client.set(
                self._name(group_id, member_id, attempt), payment_id, ex=self._ttl
            )
        except Exception as exc:
            logger.warning("payment intent cache unavailable: %s", exc)
