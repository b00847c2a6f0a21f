"""Each member's group page link: ``<base>/g/<group_id>#<invite token>``.

The group page (served by the gateway, ``gateway/group_page.py``) shows a member the cart,
their share, who has paid and a Pay button, without a login: the member's invite token is the
capability. It travels in the URL fragment, which browsers never send to a server (no access
log, no ``Referer``), and the page hands it to the gateway in a request header.

Tokens are read from the group service (``GetGroup`` as our service) when a link is rendered,
kept only in memory for ``cache_seconds`` (the burst of one group's invitations), never stored
or logged. A member without a token (removed since) gets no page link; the e-mail then carries
the provider's link alone, as it always did.
"""

from __future__ import annotations

import time
from typing import Protocol
from urllib.parse import quote

from mppo.clients.group import GroupClient
from mppo.platform.errors import DomainError, UnavailableError


class PageLinks(Protocol):
    """Where group page links come from."""

    async def link(self, group_id: str, member_id: str) -> str:
        """The member's group page link, or "" when there is none."""


def page_link(base_url: str, group_id: str, invite_token: str) -> str:
    """``<base>/g/<group_id>#<token>`` ("" without a base URL or a token)."""
    if not base_url or not invite_token:
        return ""
    return f"{base_url.rstrip('/')}/g/{quote(group_id, safe='')}#{quote(invite_token, safe='')}"


class GrpcPageLinks:
    """Links built from invite tokens the group service holds."""

    def __init__(
        self,
        base_url: str,
        groups: GroupClient,
        *,
        cache_seconds: float = 10.0,
        cache_size: int = 1000,
    ) -> None:
        self._base_url = base_url
        self._groups = groups
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}

    async def link(self, group_id: str, member_id: str) -> str:
        """The member's link; UnavailableError when the group service does not answer."""
        now = time.monotonic()
        cached = self._cache.get(group_id)
        if cached is None or cached[0] <= now or member_id not in cached[1]:
            try:
                tokens = await self._groups.invite_tokens(group_id)
            except DomainError as exc:
                raise UnavailableError(f"group service: GetGroup {exc.reason}") from None
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[group_id] = (now + self._cache_seconds, tokens)
        else:
            tokens = cached[1]
        return page_link(self._base_url, group_id, tokens.get(member_id, ""))
