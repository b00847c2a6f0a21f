"""GroupRepository on Postgres: a locked read that waited for another transaction's change
sees that change whole (its one-statement read is repeated under the lock), and one save
writes new, changed and removed members, attempts and history in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import group_svc
from group_svc.adapters.pii import PiiKeyring
from group_svc.adapters.repository import GroupRepository
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import (
    CartLine,
    FallbackPolicy,
    Group,
    MemberStatus,
    NewMember,
)
from group_svc.domain.split import ShareSpec, SplitMode
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.errors import ConflictError
from mppo.platform.migrations import upgrade_head

MIGRATIONS = Path(group_svc.__file__).resolve().parent / "migrations"
KEYRING = PiiKeyring({"k1": b"\x02" * 32}, "k1")
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_head(MIGRATIONS, fresh_database)
    built = create_engine(fresh_database, application_name="group-repository")
    try:
        yield built
    finally:
        await built.dispose()


def _guest(i: int) -> NewMember:
    return NewMember(f"Guest {i}", f"g{i}@example.com", "", f"u{i}", ShareSpec())


async def _created(sessions: async_sessionmaker[AsyncSession], guests: int = 3) -> Group:
    group = Group.create(
        group_id=str(uuid.uuid4()),
        host_user_id="host",
        merchant_id="merchant-1",
        currency_code="USD",
        items=[CartLine("l1", "sku-1", "Pizza", 2, 1000)],
        fees_minor=0,
        tax_minor=0,
        tip_minor=0,
        split_mode=SplitMode.EQUAL,
        fallback_policy=FallbackPolicy.CANCEL,
        deadline=NOW + timedelta(days=3650),
        host=NewMember("Host", "host@example.com", "+14155550100", "host", ShareSpec()),
        members=[_guest(i) for i in range(guests)],
        actor="user:host",
        now=NOW,
    )
    async with sessions() as session:
        await GroupRepository(session, KEYRING).add(group)
        await session.commit()
    return group


async def _load(sessions: async_sessionmaker[AsyncSession], group_id: str) -> Group:
    async with sessions() as session:
        group = await GroupRepository(session, KEYRING).get(group_id)
    assert group is not None
    return group


async def test_a_locked_read_that_waited_sees_the_change_it_waited_for(
    engine: AsyncEngine,
) -> None:
    sessions = create_sessionmaker(engine)
    created = await _created(sessions)
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, sql, *args: statements.append(sql),
    )
    async with sessions() as first, sessions() as second:
        mine = GroupRepository(first, KEYRING)
        group = await mine.get(created.group_id, lock=True)
        assert group is not None
        guest = group.members[1]
        guest.status = MemberStatus.PAID
        guest.paid_minor = guest.share_minor
        guest.paid_at = NOW
        group.updated_at = NOW
        await mine.save(group)

        theirs = GroupRepository(second, KEYRING)
        waiting = asyncio.create_task(theirs.get(created.group_id, lock=True))
        async with engine.connect() as probe:  # until the second read waits for the lock
            for _ in range(200):
                blocked = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                if blocked:
                    break
                await asyncio.sleep(0.05)
            assert blocked, "the second locked read never waited"
        before = len(statements)
        await first.commit()

        seen = await waiting
        assert seen is not None
        assert seen.version == group.version
        assert seen.members[1].status is MemberStatus.PAID  # not the snapshot before the change
        assert seen.members[1].paid_minor == guest.share_minor
        assert len(statements) - before == 1  # the read again, under the lock
        seen.members[2].status = MemberStatus.PAID
        seen.members[2].paid_minor = seen.members[2].share_minor
        await theirs.save(seen)
        await second.commit()

    final = await _load(sessions, created.group_id)
    assert [m.status for m in final.members][1:] == [
        MemberStatus.PAID,
        MemberStatus.PAID,
        MemberStatus.INVITED,
    ]
    assert final.version == created.version + 2


async def test_one_save_writes_new_changed_and_removed_rows_and_history_in_order(
    engine: AsyncEngine,
) -> None:
    sessions = create_sessionmaker(engine)
    created = await _created(sessions, guests=2)
    async with sessions() as session:
        repo = GroupRepository(session, KEYRING)
        group = await repo.get(created.group_id, lock=True)
        assert group is not None
        removed = group.remove_member(group.members[2].member_id, NOW)
        await repo.save(group)
        added = group.add_members([_guest(7), _guest(8)], NOW, "members")
        await repo.save(group, new_members={m.member_id for m in added})
        group.freeze(NOW)
        group.transition(GroupStatus.OPEN, "first", "test", NOW)
        group.transition(GroupStatus.CANCELLED, "second", "test", NOW)
        await repo.save(group)
        stale = await repo.get(created.group_id)
        assert stale is not None
        stale.version -= 1
        with pytest.raises(ConflictError):
            await repo.save(stale)
        await session.commit()

    loaded = await _load(sessions, created.group_id)
    assert [m.member_id for m in loaded.members] == [m.member_id for m in group.members]
    assert removed.member_id not in {m.member_id for m in loaded.members}
    assert [m.email for m in loaded.members] == [
        "host@example.com",
        "g0@example.com",
        "g7@example.com",
        "g8@example.com",
    ]
    assert loaded.members[0].phone == "+14155550100"
    assert [m.share_minor for m in loaded.members] == [m.share_minor for m in group.members]
    assert sum(m.share_minor for m in loaded.members) == 2000
    assert [(a.member_id, a.attempt, a.amount_minor) for a in loaded.attempts] == sorted(
        (a.member_id, a.attempt, a.amount_minor) for a in group.attempts
    )
    assert loaded.status is GroupStatus.CANCELLED
    assert loaded.version == created.version + 3
    async with sessions() as session:
        history = await GroupRepository(session, KEYRING).history(created.group_id)
    assert [(h["from_status"], h["to_status"], h["reason"]) for h in history] == [
        (None, "DRAFT", "group created"),
        ("DRAFT", "OPEN", "first"),
        ("OPEN", "CANCELLED", "second"),
    ]
