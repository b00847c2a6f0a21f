"""Two copies of everything, three nats-servers, and processes dying under load.

- a group of four checks out on ``--replicas 2`` exactly as on one copy of each service;
- one replica of each service (and of the worker role) is killed in turn while checkouts run:
  every request a replica's death broke is fixed by sending it again with the same
  Idempotency-Key, every group is confirmed once, with one merchant order and exactly its
  total captured, and the supervisor brought every killed process back by itself;
- the node leading the payment stream is killed during checkouts and brought back: every event
  an outbox marked published (JetStream acknowledged it) is in its stream exactly once, and
  the stream's replicas catch up.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from mppo.platform.events import HEADER_MSG_ID
from mppo.platform.messaging import server_urls
from tests.e2e.scale.checkouts import (
    Resilient,
    assert_invariants,
    kill_and_wait_back,
    run_checkouts,
)
from tests.e2e.scale.conftest import SCALED
from tests.e2e.test_checkout_e2e import (
    test_group_of_four_pays_and_the_order_is_confirmed as group_of_four_checks_out,
)
from tests.support.e2e import Api, Stack, eventually

pytestmark = pytest.mark.slow

UNPUBLISHED = "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
#: stream -> the service whose outbox publishes there
STREAMS = {"MPPO_GROUP": "group", "MPPO_PAYMENT": "payment", "MPPO_ORDER": "order"}


@pytest_asyncio.fixture(loop_scope="session")
async def resilient(scaled: Stack) -> AsyncIterator[Resilient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        yield Resilient(scaled, http)


@pytest_asyncio.fixture(loop_scope="session")
async def js(scaled: Stack) -> AsyncIterator[JetStreamContext]:
    client: Client = await nats.connect(server_urls(scaled.state["endpoints"]["nats"]))
    try:
        yield client.jetstream()
    finally:
        await client.close()


def test_two_of_every_service_and_three_nats_servers(scaled: Stack) -> None:
    processes = {p["name"]: p for p in scaled.current()["processes"]}
    for service in SCALED:
        assert scaled.state["services"][service]["processes"] == [f"{service}-1", f"{service}-2"]
    for stand_in in ("sandbox", "merchant", "smtp-sink"):
        assert scaled.state["services"][stand_in]["processes"] == [stand_in]
    assert {"nats-1", "nats-2", "nats-3"} <= set(processes)
    # callers get every replica of a peer; each replica listens on its own address
    payment = scaled.state["services"]["payment"]
    assert processes["order-1"]["env"]["MPPO_PAYMENT_ADDR"] == ",".join(payment["addrs"])
    assert processes["payment-2"]["env"]["MPPO_PAYMENT_ADDR"] == payment["addrs"][1]
    assert processes["group-1"]["env"]["MPPO_GROUP_SCHEDULER"] == "off"  # the worker role has it
    assert processes["payment-1"]["env"]["MPPO_NATS_STREAM_REPLICAS"] == "3"
    assert len(server_urls(processes["payment-1"]["env"]["MPPO_NATS_URL"])) == 3


async def test_streams_have_three_replicas(js: JetStreamContext) -> None:
    for stream in (*STREAMS, "MPPO_DLQ"):
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3, stream
        assert info.cluster is not None, stream
        assert len(info.cluster.replicas or []) == 2, stream


async def test_a_group_of_four_checks_out_on_two_replicas(scaled_api: Api) -> None:
    await group_of_four_checks_out(scaled_api)


async def test_killing_one_replica_of_each_service_during_checkouts(
    scaled: Stack, scaled_api: Api, resilient: Resilient
) -> None:
    killed: dict[str, int] = {}

    async def kill_each() -> None:
        await asyncio.sleep(2.0)
        for service in SCALED:
            killed[service] = await kill_and_wait_back(scaled, f"{service}-1")
            await asyncio.sleep(1.0)  # traffic reaches it again before the next one dies

    checkouts, _ = await asyncio.gather(
        run_checkouts(resilient, scaled_api, 10, every=4.0), kill_each()
    )
    statuses = [await assert_invariants(scaled, resilient, scaled_api, c) for c in checkouts]
    assert statuses == ["CONFIRMED"] * len(checkouts), (statuses, resilient.retried)
    for service in SCALED:
        record = scaled.process(f"{service}-1")
        assert record["restarts"] >= 1, record
        assert record["last_exit"] == -9
        assert int(record["pid"]) != killed[service]
        # the other replica was never touched
        assert scaled.process(f"{service}-2")["restarts"] == 0
    log = (scaled.state_dir / "logs" / "supervisor.log").read_text()
    for service in SCALED:
        assert f"{service}-1 (pid {killed[service]}) exited with code -9; restart 1/" in log


async def _stream_ids(js: JetStreamContext, stream: str) -> list[str]:
    """Every stored message's Nats-Msg-Id, by sequence (limits retention: none deleted)."""
    state = (await js.stream_info(stream)).state
    ids: list[str] = []
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        ids.append((msg.headers or {}).get(HEADER_MSG_ID, ""))
    return ids


async def _caught_up(js: JetStreamContext, stream: str, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while True:
        info = await js.stream_info(stream)
        peers = (info.cluster.replicas if info.cluster else None) or []
        if len(peers) == 2 and all(p.current and not p.offline and not p.lag for p in peers):
            return
        assert time.monotonic() < deadline, f"{stream} replicas did not catch up: {peers}"
        await asyncio.sleep(0.5)


async def test_killing_the_payment_stream_leader_loses_no_acknowledged_event(
    scaled: Stack, scaled_api: Api, resilient: Resilient, js: JetStreamContext
) -> None:
    info = await js.stream_info("MPPO_PAYMENT")
    assert info.cluster is not None
    assert info.cluster.leader
    node = f"nats-{str(info.cluster.leader).rsplit('-n', 1)[1]}"
    assert node in {p["name"] for p in scaled.current()["processes"]}
    restarts_before = scaled.process(node)["restarts"]

    async def kill_leader() -> None:
        await asyncio.sleep(3.0)
        await kill_and_wait_back(scaled, node)

    checkouts, _ = await asyncio.gather(
        run_checkouts(resilient, scaled_api, 5, every=2.0), kill_leader()
    )
    statuses = [await assert_invariants(scaled, resilient, scaled_api, c) for c in checkouts]
    assert statuses == ["CONFIRMED"] * len(checkouts), statuses
    assert scaled.process(node)["restarts"] == restarts_before + 1

    for stream, service in STREAMS.items():
        await _caught_up(js, stream)
        # the outbox drains (relays are woken by every commit; the poll is the safety net)
        await eventually(
            functools.partial(scaled.query, service, UNPUBLISHED),
            lambda rows: rows[0]["n"] == 0,
            within=30,
            what=f"{service}'s outbox drained",
        )
        # published rows first: whatever a relay publishes meanwhile is in the stream too
        published = await scaled.query(
            service, "SELECT event_id::text AS id FROM outbox WHERE published_at IS NOT NULL"
        )
        stored = await _stream_ids(js, stream)
        assert len(stored) == len(set(stored)), f"{stream} holds an event twice"
        missing = {row["id"] for row in published} - set(stored)
        assert not missing, f"{stream}: acknowledged but not stored: {sorted(missing)[:5]}"
