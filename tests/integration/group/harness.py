"""Test harness for the group service: real processes, real infrastructure, helpers to act
as the payment and order services on NATS and to read what the group service published."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_pb2, group_service_pb2_grpc
from mppo.group.v1 import group_service_pb2 as gs
from mppo.order.v1 import order_events_pb2
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.event_types import decode_event, new_event
from mppo.platform.events import Event
from mppo.platform.messaging import publish_event, stream_name, subject_for
from tests.support.catalogue import priced_cart
from tests.support.services import ServiceProcess

T = TypeVar("T")


def user_md(user_id: str, key: str | None = None) -> tuple[tuple[str, str], ...]:
    md: tuple[tuple[str, str], ...] = (("x-mppo-user-id", user_id),)
    return (*md, ("idempotency-key", key)) if key else md


SERVICE_MD = (("x-mppo-service", "notification"),)


def ts(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def create_request(
    total: int = 1001,
    guests: int = 3,
    deadline_in: float = 60.0,
    policy: group_pb2.FallbackPolicy.ValueType = group_pb2.FALLBACK_POLICY_CANCEL,
    currency: str = "USD",
) -> gs.CreateGroupRequest:
    """A cart worth `total` at the sandbox merchant's catalogue prices (the rest a fee), equal
    split, host + `guests` bound guests."""
    tag = uuid.uuid4().hex[:6]
    lines, fees = priced_cart(total)
    return gs.CreateGroupRequest(
        merchant_id="merchant-1",
        currency_code=currency,
        items=[
            cart_pb2.LineItem(
                line_id=ln.line_id,
                sku=ln.sku,
                name=ln.name,
                quantity=ln.quantity,
                unit_price_minor=ln.unit_price_minor,
            )
            for ln in lines
        ],
        fees_minor=fees,
        split_mode=group_pb2.SPLIT_MODE_EQUAL,
        fallback_policy=policy,
        deadline=ts(datetime.now(UTC) + timedelta(seconds=deadline_in)),
        host=group_pb2.MemberInput(display_name="Host", email=f"host-{tag}@example.com"),
        members=[
            group_pb2.MemberInput(
                display_name=f"Guest {i}", email=f"g{i}-{tag}@example.com", user_id=f"u{i}-{tag}"
            )
            for i in range(1, guests + 1)
        ],
    )


@dataclass
class Stack:
    """The processes and connections one test module shares."""

    procs: list[ServiceProcess]
    nats: NatsClient
    js: JetStreamContext
    prefix: str
    database_url: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def stub(self, index: int = 0) -> group_service_pb2_grpc.GroupServiceAsyncStub:
        channel = grpc.aio.insecure_channel(self.procs[index].addr)
        self.channels.append(channel)
        return group_service_pb2_grpc.GroupServiceStub(channel)

    async def publish(self, aggregate_id: str, message: Message) -> None:
        await publish_event(self.js, new_event(aggregate_id, message), self.prefix)

    async def pay(self, payment: Any, captured: bool = False) -> None:
        """Act as the payment service: payment.succeeded for a Payment-like object."""
        await self.publish(
            payment.payment_id,
            payment_events_pb2.PaymentSucceeded(
                payment_id=payment.payment_id,
                group_id=payment.group_id,
                member_id=payment.member_id,
                attempt=payment.attempt,
                amount=payment.amount,
                captured=captured,
            ),
        )

    async def decline(self, payment: Any) -> None:
        await self.publish(
            payment.payment_id,
            payment_events_pb2.PaymentFailed(
                payment_id=payment.payment_id,
                group_id=payment.group_id,
                member_id=payment.member_id,
                attempt=payment.attempt,
                reason="card_declined",
            ),
        )

    async def order_confirmed(self, group_id: str, total: money_pb2.Money) -> None:
        await self.publish(
            "o-" + group_id,
            order_events_pb2.OrderConfirmed(
                order_id="o-" + group_id, group_id=group_id, total=total
            ),
        )

    async def events(self, group_id: str, within: float = 20.0) -> list[tuple[str, Any]]:
        """Every group.*/member.* event about `group_id` in the stream, in order.

        Reads up to the stream's last sequence at the time of the call, so a slow machine
        cannot end the read early (a fixed idle timeout would).
        """
        stream = stream_name("MPPO_GROUP", self.prefix)
        last = -1
        async with asyncio.timeout(within):  # wait until nothing new arrives for a second
            while (current := (await self.js.stream_info(stream)).state.last_seq) != last:
                last = current
                await asyncio.sleep(1.0)
        found: list[tuple[str, Any]] = []
        if last == 0:
            return found
        sub = await self.js.subscribe(
            subject_for(">", self.prefix), stream=stream, ordered_consumer=True
        )
        try:
            async with asyncio.timeout(within):
                while True:
                    msg = await sub.next_msg(timeout=within)
                    event = Event.from_msg(msg)
                    message = decode_event(event)
                    if getattr(message, "group_id", "") == group_id:
                        found.append((event.event_type, message))
                    if msg.metadata.sequence.stream >= last:
                        break
        finally:
            await sub.unsubscribe()
        return found

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        await self.nats.close()


def of_type(events: Sequence[tuple[str, Any]], event_type: str) -> list[Any]:
    return [m for t, m in events if t == event_type]


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 20.0
) -> T:
    """Poll `probe` until `ok(value)` or fail with the last value."""
    deadline = asyncio.get_running_loop().time() + within
    value = await probe()
    while not ok(value):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {within}s; last value: {value}")
        await asyncio.sleep(0.2)
        value = await probe()
    return value


async def open_group(
    stack: Stack, request: gs.CreateGroupRequest | None = None
) -> group_pb2.GroupOrder:
    """Create (as a fresh host) and open a group; the group as the host sees it."""
    stub = stack.stub()
    created = await stub.CreateGroup(
        request or create_request(), metadata=user_md(f"host-{uuid.uuid4().hex[:6]}")
    )
    opened = await stub.OpenGroup(
        gs.OpenGroupRequest(group_id=created.group.group_id),
        metadata=user_md(created.group.host_user_id),
    )
    return opened.group


async def get_group(
    stack: Stack, group: group_pb2.GroupOrder, replica: int = 0
) -> group_pb2.GroupOrder:
    """The group now, as its host sees it."""
    reply = await stack.stub(replica).GetGroup(
        gs.GetGroupRequest(group_id=group.group_id), metadata=user_md(group.host_user_id)
    )
    return reply.group


async def wait_status(
    stack: Stack, group: group_pb2.GroupOrder, status: int, within: float = 20.0
) -> group_pb2.GroupOrder:
    """Poll until the group reaches `status`."""
    return await eventually(lambda: get_group(stack, group), lambda g: g.status == status, within)
