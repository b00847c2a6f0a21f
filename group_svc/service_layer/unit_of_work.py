"""The group service's unit of work and the dependencies its handlers share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from group_svc.adapters.cache import GroupCache
from group_svc.adapters.payment_client import PaymentClient
from group_svc.adapters.pii import PiiKeyring
from group_svc.adapters.repository import GroupRepository
from group_svc.config import GroupSettings
from mppo.platform.db import UnitOfWork


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


@dataclass
class Deps:
    """What the handlers need; built once by bootstrap."""

    sessions: async_sessionmaker[AsyncSession]
    keyring: PiiKeyring
    payments: PaymentClient
    cache: GroupCache | None
    settings: GroupSettings
    clock: Callable[[], datetime] = field(default=utcnow)


class GroupUnitOfWork(UnitOfWork):
    """One transaction with the group repository; events collected go to the outbox."""

    groups: GroupRepository

    def __init__(self, deps: Deps) -> None:
        super().__init__(deps.sessions)
        self._keyring = deps.keyring

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.groups = GroupRepository(self.session, self._keyring)
        return self
