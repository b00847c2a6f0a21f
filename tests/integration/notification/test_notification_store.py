"""The notifications table on real Postgres: one row per (event, recipient, channel), and
claims that never overlap and come back after a sender dies mid-delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

import notification_svc
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.migrations import upgrade_head
from notification_svc.domain.model import Channel, Kind, Planned, Status
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

MIGRATIONS = Path(notification_svc.__file__).parent / "migrations"


@pytest_asyncio.fixture(loop_scope="session")
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_head(MIGRATIONS, fresh_database)
    engine = create_engine(fresh_database)
    try:
        yield engine
    finally:
        await engine.dispose()


def _planned(members: list[str]) -> list[Planned]:
    return [
        Planned(Kind.GROUP_CONFIRMED, "g1", m, channel, {"order_id": "o1"})
        for m in members
        for channel in Channel
    ]


async def test_same_event_planned_again_adds_nothing(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    counts = []
    for _ in range(3):
        async with NotificationUnitOfWork(sessions) as uow:
            counts.append(
                await uow.notifications.add(
                    event_id="e1", event_type="group.confirmed", planned=_planned(["a"])
                )
            )
            await uow.commit()
    assert counts == [2, 0, 0]
    async with NotificationUnitOfWork(sessions) as uow:
        rows = await uow.notifications.for_group(group_id="g1")
    assert len(rows) == 2
    assert {r.status for r in rows} == {Status.PENDING}


async def test_claims_do_not_overlap_and_a_lost_lease_is_claimed_again(
    engine: AsyncEngine,
) -> None:
    sessions = create_sessionmaker(engine)
    async with NotificationUnitOfWork(sessions) as uow:
        await uow.notifications.add(
            event_id="e2", event_type="group.confirmed", planned=_planned(list("abcde"))
        )
        await uow.commit()

    async def claim(lease: float) -> list[str]:
        async with NotificationUnitOfWork(sessions) as uow:
            rows = await uow.notifications.claim_due(limit=4, lease=timedelta(seconds=lease))
            await uow.commit()
        return [r.notification_id for r in rows]

    first, second, third = await asyncio.gather(claim(0.5), claim(0.5), claim(0.5))
    claimed = first + second + third
    assert len(claimed) == 10
    assert len(set(claimed)) == 10  # SKIP LOCKED: no row went to two senders
    assert await claim(0.5) == []  # all leased
    # the "sender" of `first` delivers and records one; the rest of its rows it never records
    async with NotificationUnitOfWork(sessions) as uow:
        await uow.notifications.mark_sent([first[0]])
        await uow.commit()

    async def again() -> list[str]:
        return await claim(30)

    deadline = asyncio.get_running_loop().time() + 10
    reclaimed: list[str] = []
    while asyncio.get_running_loop().time() < deadline and len(reclaimed) < 9:
        reclaimed += await again()
        await asyncio.sleep(0.1)
    assert sorted(reclaimed) == sorted(claimed[1:])  # everything but the SENT row comes back
