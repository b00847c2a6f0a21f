"""Idempotency keys for mutating calls (docs/design.md §7).

A key is claimed inside the same transaction as the call's effect: the first caller inserts
the row and later stores its response with `complete()`; a concurrent duplicate blocks on the
primary key until the first commits, then gets the stored response; had the first rolled
back, the duplicate becomes the first. Reusing a key with different parameters is refused.
Redis may front the table (`IdempotencyCache`), never replace it.

A call answered with a stored response is a replay, and says so: `claim` (and a cache hit)
mark the call's `ReplayWatch`, which the service runtime opens around every RPC and turns into
the response header `idempotent-replayed: true` (gRPC initial metadata; the REST gateways pass
it on as the HTTP header `Idempotent-Replayed`). The watch is a mutable holder in a context
variable, so a replay found in a task the handler started still reaches it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mppo.platform.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError
from mppo.platform.schema import idempotency_keys

logger = logging.getLogger(__name__)

METADATA_KEY = "idempotency-key"

# Built once (every mutating call runs them): no per-call statement construction.
_TABLE = idempotency_keys.name
_CLAIM = text(
    f"INSERT INTO {_TABLE} (scope, key, request_hash, status)"
    " VALUES (:scope, :key, :request_hash, 'started')"
    " ON CONFLICT (scope, key) DO NOTHING RETURNING key"
)
_STORED = text(f"SELECT request_hash, response FROM {_TABLE} WHERE scope = :scope AND key = :key")
_COMPLETE = text(
    f"UPDATE {_TABLE} SET response = :response, status = 'completed'"
    " WHERE scope = :scope AND key = :key"
)
MAX_KEY_LENGTH = 255
#: response metadata (and HTTP header, as `Idempotent-Replayed`) of an answer that was stored
REPLAYED_KEY = "idempotent-replayed"


class ReplayWatch:
    """Whether the call it watches was answered with a stored response."""

    __slots__ = ("replayed",)

    def __init__(self) -> None:
        self.replayed = False


_WATCH: ContextVar[ReplayWatch | None] = ContextVar("mppo_idempotency_replay", default=None)


@contextmanager
def watch_replays() -> Iterator[ReplayWatch]:
    """Watch the calls made in this block (one RPC) for a stored answer."""
    watch = ReplayWatch()
    token = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(token)


def mark_replayed() -> None:
    """The current call is being answered with a stored response."""
    watch = _WATCH.get()
    if watch is not None:
        watch.replayed = True


@dataclass(frozen=True)
class IdempotencyKey:
    """A key as used by one caller on one method, with the fingerprint of its request."""

    scope: str
    key: str
    request_hash: str


def fingerprint(request: Message) -> str:
    """SHA-256 of the request's deterministic serialization."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def key_for(
    metadata: Sequence[tuple[str, Any]] | None, method: str, caller: str, request: Message
) -> IdempotencyKey | None:
    """The key sent in gRPC metadata for this call, scoped to method and caller (or None)."""
    for name, value in metadata or ():
        if name.lower() == METADATA_KEY and isinstance(value, str):
            if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
                raise InvalidArgumentError(
                    "invalid idempotency key",
                    [FieldViolation(METADATA_KEY, f"1 to {MAX_KEY_LENGTH} printable characters")],
                )
            return IdempotencyKey(f"{method}:{caller}", value, fingerprint(request))
    return None


async def claim(conn: AsyncSession | AsyncConnection, key: IdempotencyKey) -> bytes | None:
    """Claim `key` in the caller's transaction.

    Returns None when this call is the first (do the work, then `complete()` before commit),
    or the stored response of the first call. Raises FailedPreconditionError when the key
    was used with different parameters.
    """
    params = {"scope": key.scope, "key": key.key, "request_hash": key.request_hash}
    inserted = await conn.execute(_CLAIM, params)
    if inserted.first() is not None:
        return None
    row = (await conn.execute(_STORED, params)).one()
    if row.request_hash != key.request_hash:
        raise FailedPreconditionError(
            "this idempotency key was used with different parameters",
            reason="IDEMPOTENCY_KEY_REUSED",
            violations=[FieldViolation(METADATA_KEY, "send a new key for a different request")],
        )
    response: bytes | None = row.response
    if response is None:
        raise FailedPreconditionError(
            "a request with this idempotency key has no stored result",
            reason="IDEMPOTENCY_KEY_INCOMPLETE",
        )
    mark_replayed()
    return response


async def complete(
    conn: AsyncSession | AsyncConnection, key: IdempotencyKey, response: bytes
) -> None:
    """Store the first call's response; commits with the caller's transaction."""
    await conn.execute(_COMPLETE, {"scope": key.scope, "key": key.key, "response": response})


class IdempotencyCache:
    """Redis fast path for replays: response bytes keyed by scope, key and fingerprint."""

    def __init__(self, client: aioredis.Redis, ttl_seconds: int = 24 * 3600) -> None:
        self._client = client
        self._ttl = ttl_seconds

    @staticmethod
    def _name(key: IdempotencyKey) -> str:
        return f"idem:{key.scope}:{key.key}:{key.request_hash}"

    async def get(self, key: IdempotencyKey) -> bytes | None:
        """The cached response, or None (also when Redis is down: the table decides)."""
        try:
            value = await self._client.get(self._name(key))
        except Exception as exc:
            logger.warning("idempotency cache unavailable: %s", exc)
            return None
        if not isinstance(value, bytes):
            return None
        mark_replayed()
        return value

    async def put(self, key: IdempotencyKey, response: bytes) -> None:
        """Remember a committed response."""
        try:
            await self._client.set(self._name(key), response, ex=self._ttl)
        except Exception as exc:
            logger.warning("idempotency cache unavailable: %s", exc)
