"""The members' contact details, fetched from the group service (`GetGroupContacts`, through
:meth:`mppo.clients.group.GroupClient.contacts`).

Events carry no personal data; addresses are read over gRPC when needed and kept only in
memory: for the delivery at hand, and in a small per-process cache keyed by group that forgets
an entry after ``cache_seconds`` (default 10 s). The cache serves the burst of look-ups one
checkout causes (an event planned, then its rows delivered) with one group-service call; it is
never persisted or logged, and a look-up that needs a member the cached list lacks (someone
added since) goes to the group service again.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Protocol

from mppo.clients.group import GroupClient
from mppo.group.v1 import group_pb2
from mppo.platform.errors import DomainError, UnavailableError
from notification_svc.domain.model import Contact, Role

_ROLES = {group_pb2.MEMBER_ROLE_HOST: Role.HOST, group_pb2.MEMBER_ROLE_GUEST: Role.GUEST}


class ContactDirectory(Protocol):
    """Where contacts come from."""

    async def contacts(
        self, group_id: str, *, covering: Collection[str] = (), fresh: bool = False
    ) -> list[Contact]:
        """Every member of the group with their contact details ([] for an unknown group);
        the list includes each member id in ``covering`` that is still in the group, and is
        read from the source (not a cache) when ``fresh``."""


class GrpcContactDirectory:
    """Reads contacts from the group service."""

    def __init__(
        self,
        groups: GroupClient,
        *,
        cache_seconds: float = 10.0,
        cache_size: int = 1000,
    ) -> None:
        self._groups = groups
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._cache: dict[str, tuple[float, list[Contact]]] = {}

    async def contacts(
        self, group_id: str, *, covering: Collection[str] = (), fresh: bool = False
    ) -> list[Contact]:
        """Every member of the group; UnavailableError when the group service does not answer.

        Served from the short-lived cache unless ``fresh``, when it has the group and every id
        in ``covering``.
        """
        now = time.monotonic()
        cached = None if fresh else self._cache.get(group_id)
        if cached is not None and cached[0] > now:
            known = {c.member_id for c in cached[1]}
            if all(member_id in known for member_id in covering):
                return list(cached[1])
        found = await self._fetch(group_id)
        if found and self._cache_seconds > 0:
            self._remember(group_id, found, now)
        return found

    def _remember(self, group_id: str, found: list[Contact], now: float) -> None:
        if len(self._cache) >= self._cache_size:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache.pop(group_id, None)
        self._cache[group_id] = (now + self._cache_seconds, found)

    async def _fetch(self, group_id: str) -> list[Contact]:
        try:
            found = await self._groups.contacts(group_id)  # [] for an unknown group
        except DomainError as exc:
            raise UnavailableError(f"group service: GetGroupContacts {exc.reason}") from None
        return [
            Contact(
                member_id=c.member_id,
                display_name=c.display_name,
                email=c.email,
                role=_ROLES.get(c.role, Role.UNKNOWN),
            )
            for c in found
        ]

    async def close(self) -> None:
        """Forget the cache (the group client is closed by whoever opened it)."""
        self._cache.clear()
