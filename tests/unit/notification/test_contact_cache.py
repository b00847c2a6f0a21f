"""The contact directory's short-lived in-memory cache: one group-service call serves a burst,
a member the cached list lacks or a ``fresh`` read goes to the source, entries expire."""

from __future__ import annotations

from mppo.clients.group import GroupClient
from notification_svc.adapters.contacts import GrpcContactDirectory
from notification_svc.domain.model import Contact, Role


class _CountingDirectory(GrpcContactDirectory):
    """The real cache over a stand-in for the gRPC call."""

    def __init__(self, members: list[str], **kwargs: float) -> None:
        super().__init__(GroupClient("127.0.0.1:1", "notification"), **kwargs)  # type: ignore[arg-type]
        self.members = members
        self.calls = 0

    async def _fetch(self, group_id: str) -> list[Contact]:
        self.calls += 1
        return [
            Contact(member_id=m, display_name=m.upper(), email=f"{m}@example.test", role=Role.GUEST)
            for m in self.members
        ]


async def test_a_burst_of_lookups_is_one_call() -> None:
    directory = _CountingDirectory(["a", "b"])
    for _ in range(5):
        found = await directory.contacts("g1", covering=["a"])
        assert [c.member_id for c in found] == ["a", "b"]
    assert directory.calls == 1
    await directory.contacts("g2")
    assert directory.calls == 2


async def test_a_member_missing_from_the_cache_or_fresh_reads_the_source() -> None:
    directory = _CountingDirectory(["a"])
    await directory.contacts("g1")
    directory.members = ["a", "c"]
    found = await directory.contacts("g1", covering=["c"])
    assert [c.member_id for c in found] == ["a", "c"]
    assert directory.calls == 2
    await directory.contacts("g1", fresh=True)
    assert directory.calls == 3


async def test_entries_expire_and_the_cache_is_bounded() -> None:
    directory = _CountingDirectory(["a"], cache_seconds=0.0)
    await directory.contacts("g1")
    await directory.contacts("g1")
    assert directory.calls == 2  # cache off
    bounded = _CountingDirectory(["a"], cache_size=2)
    for group in ("g1", "g2", "g3"):
        await bounded.contacts(group)
    assert len(bounded._cache) == 2
    assert "g1" not in bounded._cache
    await bounded.close()
    assert not bounded._cache
