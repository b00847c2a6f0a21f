"""A three-node JetStream cluster as ``mppo dev up --nats-cluster 3`` starts it: the MPPO
streams get three replicas, the leader's node is killed while publishes go on, the supervisor
brings it back, and every acknowledged publish is in the stream exactly once while the node
catches up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from mppo.devstack.nats_server import EmbeddedNatsCluster
from mppo.devstack.process import RUNNING, RestartPolicy, Supervisor
from mppo.platform import messaging
from mppo.platform.events import HEADER_MSG_ID
from mppo.platform.messaging import StreamLimits, stream_name

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, base: Path) -> None:
        self.nodes = EmbeddedNatsCluster(base / "nats", 3)
        self.sup = Supervisor(base / "logs")
        self.keeper: asyncio.Future[None] | None = None

    async def start(self) -> None:
        await asyncio.gather(*(self.sup.start(spec) for spec in self.nodes.specs()))
        self.keeper = asyncio.ensure_future(
            self.sup.keep_up(RestartPolicy(backoff=1.0, max_backoff=2.0))
        )

    async def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.cancel()
            await asyncio.gather(self.keeper, return_exceptions=True)
        await self.sup.stop_all()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(tmp_path)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def _leader(js: JetStreamContext, stream: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(Exception):
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                return str(info.cluster.leader)
        assert time.monotonic() < deadline, f"{stream} has no leader"
        await asyncio.sleep(0.2)


async def _stored_ids(js: JetStreamContext, stream: str, subject: str) -> list[str]:
    """Every message's Nats-Msg-Id, in stream order (an ephemeral pull consumer)."""
    # right after a node came back the cluster may still be settling who leads the consumer
    # API: creating the consumer is retried for a while (reading what is stored is the test)
    deadline = time.monotonic() + 30
    while True:
        try:
            sub = await js.pull_subscribe(
                subject,
                stream=stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0),
            )
            break
        except (nats.errors.TimeoutError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    ids: list[str] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(200, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                return ids
            for msg in msgs:
                ids.append((msg.headers or {}).get(HEADER_MSG_ID, ""))
                await msg.ack()
    finally:
        await sub.unsubscribe()


async def _publish_all(js: JetStreamContext, subject: str, ids: list[str]) -> list[str]:
    """Publish each id until JetStream acknowledges it (as the outbox relay retries a row);
    returns the ids acknowledged."""
    acked = []
    for event_id in ids:
        deadline = time.monotonic() + 60
        while True:
            try:
                await messaging.publish(
                    js, subject, b"x", {HEADER_MSG_ID: event_id}, ack_timeout=1.0, attempts=2
                )
                break
            except Exception:
                assert time.monotonic() < deadline, f"{event_id} never acknowledged"
                await asyncio.sleep(0.2)
        acked.append(event_id)
    return acked


async def test_killing_the_stream_leader_loses_no_acknowledged_publish(cluster: Cluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    nc: Client = await messaging.connect(cluster.nodes.url, name="cluster-test")
    try:
        js = nc.jetstream()
        await messaging.ensure_streams(js, prefix, limits=StreamLimits(), num_replicas=3)
        stream = stream_name("MPPO_PAYMENT", prefix)
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2  # and the leader: three copies
        # idempotent: a second provisioning with the same replicas changes nothing
        assert (
            await messaging.ensure_streams(js, prefix, limits=StreamLimits(), num_replicas=3) == []
        )

        subject = messaging.subject_for("payment.succeeded", prefix)
        ids = [f"evt-{i}" for i in range(300)]
        leader = await _leader(js, stream)
        node = next(n for n in cluster.nodes.nodes if n.server_name == leader)
        proc = cluster.sup.find(node.name)
        killed_pid = proc.pid

        async def kill_midway() -> None:
            await asyncio.sleep(0.3)
            os.kill(killed_pid, signal.SIGKILL)

        killer = asyncio.ensure_future(kill_midway())
        acked = await _publish_all(js, subject, ids)
        await killer
        # publishing again what may have been acknowledged without us hearing: deduplicated
        acked += await _publish_all(js, subject, ids[-20:])

        # the supervisor brought the node back and it caught up with the new leader
        deadline = time.monotonic() + 60
        while not (proc.pid != killed_pid and proc.state == RUNNING):
            assert time.monotonic() < deadline, "the killed node was not restarted"
            await asyncio.sleep(0.2)
        assert proc.restarts == 1
        new_leader = await _leader(js, stream)
        while True:
            info = await js.stream_info(stream)
            peers = info.cluster.replicas if info.cluster else []
            if len(peers or []) == 2 and all(p.current and not p.lag for p in peers or []):
                break
            assert time.monotonic() < deadline, f"replicas did not catch up: {peers}"
            await asyncio.sleep(0.3)
        assert info.state.messages == len(ids)

        stored = await _stored_ids(js, stream, subject)
        assert stored == ids  # every acknowledged publish, once, in order
        assert set(acked) == set(ids)
        # the killed node was the leader; a new one took over while it was gone
        assert new_leader
    finally:
        await nc.close()
