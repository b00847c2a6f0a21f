"""The group service's unit of work: one transaction with its repositories.

`GroupUnitOfWork` only attaches the repositories (adapters/repository.py); the platform's
:class:`~mppo.platform.unit_of_work.UnitOfWork` publishes what the groups it handed out
recorded (through `adapters.event_mapping.to_outbox`) when it commits. The handlers see the
repositories through the protocols below, so unit tests run them on in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from group_svc.adapters.event_mapping import to_outbox
from group_svc.adapters.pii import PiiKeyring
from group_svc.adapters.repository import (
    Duties,
    GroupRepository,
    IdempotencyKeys,
    Release,
    ReleaseQueue,
)
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import Group, Member
from mppo.platform.idempotency import IdempotencyKey
from mppo.platform.unit_of_work import UnitOfWork


class Groups(Protocol):
    """Group aggregates (every group handed out is tracked by the unit of work)."""

    async def add(self, group: Group) -> None: ...
    async def get(self, group_id: str, *, lock: bool = False) -> Group | None: ...
    async def save(self, group: Group, new_members: set[str] | None = None) -> None: ...
    async def version(self, group_id: str) -> int | None: ...
    async def members(self, group_id: str) -> list[Member]: ...
    async def history(
        self, group_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Any]: ...
    async def ids_for_user(
        self,
        user_id: str,
        status: GroupStatus | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[str, datetime]]: ...
    async def claim_due(self, now: datetime, limit: int) -> list[str]: ...
    async def fallbacks_without_intent(self, limit: int) -> list[str]: ...
    async def claim_reminders_due(
        self, now: datetime, lead: timedelta, limit: int
    ) -> list[str]: ...
    async def duties(self, now: datetime, lead: timedelta) -> Duties: ...


class Releases(Protocol):
    """Payments the groups do not keep, to void or refund."""

    async def add(
        self, group_id: str, payment_id: str, captured: bool, reason: str, now: datetime
    ) -> None: ...
    async def claim_due(self, now: datetime, limit: int) -> Sequence[Release]: ...
    async def done(self, payment_id: str, now: datetime) -> None: ...
    async def refused(self, payment_id: str, now: datetime, error: str) -> None: ...
    async def retry_later(self, payment_id: str, at: datetime, error: str) -> None: ...


class Idempotency(Protocol):
    """Idempotency keys claimed in the call's transaction."""

    async def claim(self, key: IdempotencyKey) -> bytes | None: ...
    async def complete(self, key: IdempotencyKey, response: bytes) -> None: ...
    async def lookup(self, key: IdempotencyKey) -> bytes | None: ...
    async def store(self, key: IdempotencyKey, response: bytes) -> bytes | None: ...


class GroupUnitOfWork(UnitOfWork):
    """One transaction over the group tables."""

    groups: Groups
    releases: Releases
    idempotency: Idempotency

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: PiiKeyring) -> None:
        super().__init__(sessions, to_outbox)
        self._keyring = keyring

    def _open(self, session: AsyncSession) -> None:
        self.groups = GroupRepository(session, self._keyring, self.track)
        self.releases = ReleaseQueue(session)
        self.idempotency = IdempotencyKeys(session)
