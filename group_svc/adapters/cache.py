"""Redis snapshot cache of groups: an aid, never the source of truth.

A snapshot is keyed by group id *and version*; readers first read the current version from
Postgres (one indexed row), so a cached snapshot can never be served after a change, and
writers also delete the group's keys after commit. Snapshots hold contact details, so they
are sealed with the PII key (AES-GCM). With Redis down every call reads Postgres. Keys are
``<namespace>group:{<group id>}:v<version>``: the ``{…}`` hash tag keeps a group's keys in one
Redis Cluster slot (docs/scaling.md).
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from group_svc.adapters.pii import PiiDecryptionError, PiiKeyring
from mppo.group.v1 import group_pb2

logger = logging.getLogger(__name__)

TTL_SECONDS = 3600


class GroupCache:
    """Get/put/invalidate sealed GroupOrder snapshots."""

    def __init__(self, client: aioredis.Redis, keyring: PiiKeyring, namespace: str) -> None:
        self._client = client
        self._keyring = keyring
        self._namespace = namespace

    def _key(self, group_id: str, version: int) -> str:
        # the group id is the hash tag: every version of a group lives in one Redis Cluster
        # slot, so `invalidate` deletes them with one multi-key DEL
        return f"{self._namespace}group:{{{group_id}}}:v{version}"

    async def get(self, group_id: str, version: int) -> group_pb2.GroupOrder | None:
        """The snapshot of exactly this version, or None."""
        try:
            blob = await self._client.get(self._key(group_id, version))
        except Exception as exc:
            logger.warning("group cache unavailable: %r", exc)
            return None
        if not isinstance(blob, bytes):
            return None
        try:
            snapshot = group_pb2.GroupOrder.FromString(self._keyring.open_bytes(blob))
        except (PiiDecryptionError, ValueError) as exc:
            logger.warning("group cache entry unreadable: %r", exc)
            return None
        return snapshot if snapshot.version == version else None

    async def put(self, snapshot: group_pb2.GroupOrder) -> None:
        """Remember a snapshot read from Postgres."""
        try:
            await self._client.set(
                self._key(snapshot.group_id, snapshot.version),
                self._keyring.seal_bytes(snapshot.SerializeToString()),
                ex=TTL_SECONDS,
            )
        except Exception as exc:
            logger.warning("group cache unavailable: %r", exc)

    async def invalidate(self, group_id: str, version: int) -> None:
        """Drop the snapshots of versions up to `version` (after a committed change)."""
        try:
            await self._client.delete(
                *(self._key(group_id, v) for v in range(max(1, version - 3), version + 1))
            )
        except Exception as exc:
            logger.warning("group cache unavailable: %r", exc)
