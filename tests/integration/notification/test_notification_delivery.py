"""The real notification service process, against real NATS and Postgres, the real group
service (contacts via GetGroupContacts), the real SMTP sink process and a real HTTP
webhook receiver. Events are published through JetStream exactly as producers do.

One stack serves the module (starting processes is the slow part); every test uses its own
group, so tests do not see each other's notifications.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.js import JetStreamContext

from mppo.common.v1 import cart_pb2, money_pb2
from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from mppo.group.v1 import group_events_pb2 as ge
from mppo.group.v1 import group_pb2, group_service_pb2, group_service_pb2_grpc
from mppo.notification.v1 import notification_service_pb2 as npb
from mppo.notification.v1 import notification_service_pb2_grpc
from mppo.payment.v1 import payment_events_pb2 as pe
from mppo.platform.event_types import new_event
from mppo.platform.events import HEADER_MSG_ID
from mppo.platform.messaging import connect, ensure_streams, publish, stream_name, subject_for
from notification_svc.domain import signature
from tests.support.catalogue import priced_cart
from tests.support.fake_orders import start_fake_orders
from tests.support.services import ServiceProcess, start_service, wait_serving

SECRET = "whsec_notification_test"
WAIT = 30.0
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
SENT = npb.NOTIFICATION_STATUS_SENT
FAILED = npb.NOTIFICATION_STATUS_FAILED
PENDING = npb.NOTIFICATION_STATUS_PENDING
EMAIL = npb.NOTIFICATION_CHANNEL_EMAIL
WEBHOOK = npb.NOTIFICATION_CHANNEL_WEBHOOK


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Hook:
    """One webhook request the receiver saw."""

    notification_id: str
    body: bytes
    signature: str
    answered: int


@dataclass
class Receiver:
    """The client app's webhook endpoint: 500 on each notification's first delivery, then 200;
    always 500 for groups in ``failing``."""

    hooks: list[Hook] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        nid = request.headers.get("Mppo-Notification-Id", "")
        group_id = json.loads(body)["group_id"]
        seen = any(h.notification_id == nid for h in self.hooks)
        status = 500 if group_id in self.failing or not seen else 200
        self.hooks.append(Hook(nid, body, request.headers.get("Mppo-Signature", ""), status))
        return web.Response(status=status)

    def for_group(self, group_id: str) -> list[Hook]:
        return [h for h in self.hooks if json.loads(h.body)["group_id"] == group_id]


@dataclass
class Stack:
    prefix: str
    js: JetStreamContext
    group: group_service_pb2_grpc.GroupServiceAsyncStub
    notifications: notification_service_pb2_grpc.NotificationServiceAsyncStub
    sink_url: str
    receiver: Receiver
    procs: list[ServiceProcess]
    emails: set[str] = field(default_factory=set)

    async def mails(self, to: str) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.sink_url}/messages", params={"to": to}) as resp,
        ):
            assert resp.status == 200
            return list((await resp.json())["messages"])

    async def publish(self, aggregate_id: str, message: Message, times: int = 1) -> str:
        """Publish one event ``times`` times: later copies get a new Nats-Msg-Id (as a relay
        re-publishing after JetStream's duplicate window would), the same event id."""
        event = new_event(aggregate_id, message)
        for copy in range(times):
            headers = event.to_headers()
            if copy:
                headers[HEADER_MSG_ID] = f"{event.event_id}-again-{copy}"
            await publish(
                self.js, subject_for(event.event_type, self.prefix), event.payload, headers
            )
        return event.event_id

    async def listed(self, group_id: str, **filters: Any) -> list[npb.Notification]:
        """The notifications, read whole and also in pages of 2 (each once, none missing)."""
        md = (("x-mppo-service", "test"),)
        reply = await self.notifications.ListNotifications(
            npb.ListNotificationsRequest(group_id=group_id, **filters), metadata=md, timeout=5
        )
        whole = list(reply.notifications)
        paged: list[npb.Notification] = []
        token = ""
        for _ in range(len(whole) + 1):
            page = await self.notifications.ListNotifications(
                npb.ListNotificationsRequest(
                    group_id=group_id, page_size=2, page_token=token, **filters
                ),
                metadata=md,
                timeout=5,
            )
            paged += page.notifications
            token = page.next_page_token
            if not token:
                break
        ids = [n.notification_id for n in paged]  # rows may arrive between the two reads
        assert len(ids) == len(set(ids))
        assert {n.notification_id for n in whole} <= set(ids)
        return whole

    async def settled(self, group_id: str, count: int) -> list[npb.Notification]:
        """Wait until the group has ``count`` notifications and none is PENDING."""

        async def check() -> list[npb.Notification] | None:
            found = await self.listed(group_id)
            done = len(found) == count and all(n.status != PENDING for n in found)
            return found if done else None

        return list(await eventually(check, f"{count} settled notifications"))

    async def drained(self) -> None:
        """Wait until the group-events consumer has acknowledged everything published."""

        async def check() -> bool:
            info = await self.js.consumer_info(
                stream_name("MPPO_GROUP", self.prefix), "notification-group"
            )
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await eventually(check, "the consumer to drain")

    async def create_group(self, names: list[str]) -> tuple[str, dict[str, str], dict[str, str]]:
        """A real group at the group service: (group id, name → member id, name → e-mail)."""
        tag = uuid.uuid4().hex[:8]
        emails = {name: f"{name.lower()}.{tag}@example.com" for name in names}
        self.emails.update(emails.values())
        deadline = Timestamp()
        deadline.FromDatetime(datetime.now(UTC) + timedelta(hours=2))
        lines, fees = priced_cart(4000)  # at the merchant's catalogue prices
        reply = await self.group.CreateGroup(
            group_service_pb2.CreateGroupRequest(
                merchant_id="merchant-1",
                currency_code="USD",
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
                fallback_policy=group_pb2.FALLBACK_POLICY_CANCEL,
                deadline=deadline,
                host=group_pb2.MemberInput(display_name=names[0], email=emails[names[0]]),
                members=[group_pb2.MemberInput(display_name=n, email=emails[n]) for n in names[1:]],
            ),
            metadata=(("x-mppo-user-id", f"user-{tag}"),),
            timeout=10,
        )
        members = {m.display_name: m.member_id for m in reply.group.members}
        assert set(members) == set(names)
        return reply.group.group_id, members, emails


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency_code="USD")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    prefix = f"n{uuid.uuid4().hex[:6]}"
    logs = tmp_path_factory.mktemp("notification-logs")
    common: dict[str, Any] = {
        "redis_url": infra.redis_url,
        "nats_url": infra.nats_url,
        "nats_prefix": prefix,
    }
    nats: Client = await connect(infra.nats_url)
    js = nats.jetstream()
    await ensure_streams(js, prefix)

    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    procs: list[ServiceProcess] = []
    channels: list[grpc.aio.Channel] = []
    orders_port = free_port()  # prices the carts of the groups the tests create
    orders, _ = await start_fake_orders(orders_port)
    try:
        sink = start_service(
            "smtp_sink",
            module="notification_svc.smtp_sink",
            database_url="postgresql://unused/none",
            log_dir=logs,
            env={"MPPO_SMTP_SINK_SMTP_ADDR": "127.0.0.1:0"},  # free port, found via GET /info
            **common,
        )
        procs.append(sink)
        group = start_service(
            "group",
            database_url=await infra.create_database(f"g_{uuid.uuid4().hex[:10]}"),
            log_dir=logs,
            env={
                "MPPO_GROUP_SCHEDULER": "off",
                "MPPO_PAYMENT_ADDR": f"127.0.0.1:{free_port()}",
                "MPPO_ORDER_ADDR": f"127.0.0.1:{orders_port}",
            },
            **common,
        )
        procs.append(group)
        notification = start_service(
            "notification",
            database_url=await infra.create_database(f"n_{uuid.uuid4().hex[:10]}"),
            log_dir=logs,
            env={
                "MPPO_GROUP_ADDR": group.addr,
                "MPPO_SMTP_SINK_ADDR": sink.addr,
                "MPPO_NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
                "MPPO_NOTIFY_WEBHOOK_SECRET": SECRET,
                "MPPO_NOTIFY_MAX_ATTEMPTS": "3",
                "MPPO_NOTIFY_RETRY_BASE_SECONDS": "0.2",
                "MPPO_NOTIFY_POLL_SECONDS": "0.1",
                "MPPO_NOTIFY_SETTLE_SECONDS": "4",
            },
            **common,
        )
        procs.append(notification)
        await asyncio.gather(wait_serving(group), wait_serving(notification))
        sink_url = f"http://{sink.addr}"

        async def sink_up() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{sink_url}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(sink_up, "the SMTP sink")
        group_channel = grpc.aio.insecure_channel(group.addr)
        notification_channel = grpc.aio.insecure_channel(notification.addr)
        channels += [group_channel, notification_channel]
        yield Stack(
            prefix=prefix,
            js=js,
            group=group_service_pb2_grpc.GroupServiceStub(group_channel),
            notifications=notification_service_pb2_grpc.NotificationServiceStub(
                notification_channel
            ),
            sink_url=sink_url,
            receiver=receiver,
            procs=procs,
        )
    finally:
        for channel in channels:
            await channel.close(None)
        for proc in reversed(procs):
            assert proc.stop() == 0, proc.log_text()
        await orders.stop(grace=1)
        await runner.cleanup()
        await nats.close()


async def test_invitation_delivered_three_times_is_one_email_per_member_with_its_link(
    stack: Stack,
) -> None:
    group_id, members, emails = await stack.create_group(["Hana", "Ben", "Cleo", "Dev"])
    opened = ge.GroupOpened(
        group_id=group_id,
        total=usd(4000),
        invitations=[
            ge.MemberInvitation(
                member_id=mid,
                share=usd(1000),
                payment_id=f"pay-{mid}",
                payment_link=f"https://pay.test/checkout/{mid}",
            )
            for mid in members.values()
        ],
    )
    opened.deadline.FromDatetime(datetime(2030, 1, 2, 3, 4, tzinfo=UTC))
    event_id = await stack.publish(group_id, opened, times=3)

    listed = await stack.settled(group_id, count=8)
    await stack.drained()
    service_log = next(p for p in stack.procs if p.name == "notification").log_text()
    assert service_log.count(f"duplicate event {event_id} acked") == 2  # really redelivered
    assert all(n.status == SENT for n in listed), listed
    assert {n.kind for n in listed} == {npb.NOTIFICATION_KIND_INVITATION}
    for name, member_id in members.items():
        [mail] = await stack.mails(emails[name])  # exactly one, though delivered 3 times
        assert mail["rcpt_to"] == [emails[name]]
        assert f"https://pay.test/checkout/{member_id}" in mail["body"]
        assert mail["body"].startswith(f"Hi {name},")
        assert "10.00 USD" in mail["subject"]
        assert "2030-01-02 03:04 UTC" in mail["body"]
        others = [m for m in members.values() if m != member_id]
        assert not any(f"/checkout/{o}" in mail["body"] for o in others)
        [email_row] = [n for n in listed if n.member_id == member_id and n.channel == EMAIL]
        assert mail["message_id"] == email_row.delivery_id
        assert mail["headers"]["X-Mppo-Notification-Id"] == email_row.notification_id
        assert email_row.attempts == 1
        assert email_row.event_type == "group.opened"
    filtered = await stack.listed(group_id, member_id=members["Ben"], channel=EMAIL)
    assert [n.member_id for n in filtered] == [members["Ben"]]


async def test_webhook_is_signed_and_retried_once_after_a_500(stack: Stack) -> None:
    group_id, members, emails = await stack.create_group(["Host", "Payer"])
    payer = members["Payer"]
    paid = ge.MemberPaid(
        group_id=group_id,
        member_id=payer,
        payment_id="pay-1",
        amount=usd(2000),
        remaining_members=1,
    )
    await stack.publish(group_id, paid, times=2)
    listed = await stack.settled(group_id, count=2)  # the payer's e-mail and webhook only
    assert {(n.member_id, n.channel, n.status) for n in listed} == {
        (payer, EMAIL, SENT),
        (payer, WEBHOOK, SENT),
    }
    [hook_row] = [n for n in listed if n.channel == WEBHOOK]
    assert hook_row.attempts == 2
    assert hook_row.last_error == "webhook HTTP 500"
    hooks = stack.receiver.for_group(group_id)
    assert [h.answered for h in hooks] == [500, 200]  # exactly one successful delivery
    for hook in hooks:
        assert hook.notification_id == hook_row.notification_id
        signature.verify(SECRET, hook.signature, hook.body, now=int(time.time()))
        with pytest.raises(signature.SignatureError):
            signature.verify("wrong", hook.signature, hook.body, now=int(time.time()))
    doc = json.loads(hooks[-1].body)
    assert doc["type"] == "notification.payment_received"
    assert doc["member_id"] == payer
    assert doc["data"]["amount_minor"] == "2000"
    assert not EMAIL_RE.search(hooks[-1].body.decode())  # no personal data in webhooks
    assert doc["data"]["captured"] == "false"
    [mail] = await stack.mails(emails["Payer"])
    assert "20.00 USD" in mail["subject"]
    assert "It is held, not charged, until the order is confirmed." in mail["body"]
    assert await stack.mails(emails["Host"]) == []


async def test_a_payment_captured_at_once_is_said_to_be_charged_not_held(stack: Stack) -> None:
    """A Razorpay payment link captures at once: the payer's e-mail must not call it a hold."""
    group_id, members, emails = await stack.create_group(["Host", "Razor"])
    paid = ge.MemberPaid(
        group_id=group_id,
        member_id=members["Razor"],
        payment_id="pay-rzp",
        amount=usd(1500),
        remaining_members=1,
        captured=True,
    )
    await stack.publish(group_id, paid)
    await stack.settled(group_id, count=2)
    [mail] = await stack.mails(emails["Razor"])
    assert "15.00 USD" in mail["subject"]
    assert "It is charged now and refunded if the order is not confirmed." in mail["body"]
    assert "held" not in mail["body"]


async def test_a_webhook_that_keeps_failing_ends_failed_and_visible(stack: Stack) -> None:
    group_id, _members, _ = await stack.create_group(["Host", "Guest"])
    stack.receiver.failing.add(group_id)
    await stack.publish(group_id, ge.GroupConfirmed(group_id=group_id, order_id="order-7"))
    listed = await stack.settled(group_id, count=4)
    hooks = [n for n in listed if n.channel == WEBHOOK]
    assert {n.status for n in hooks} == {FAILED}
    assert all(n.attempts == 3 and n.last_error == "webhook HTTP 500" for n in hooks)
    assert {n.status for n in listed if n.channel == EMAIL} == {SENT}
    assert len(stack.receiver.for_group(group_id)) == 6  # 3 attempts x 2 members, then stop


async def test_cancellation_says_released_refunded_or_not_charged_per_member(
    stack: Stack,
) -> None:
    group_id, members, emails = await stack.create_group(["Host", "Held", "Captured"])
    held, captured = members["Held"], members["Captured"]
    await stack.publish(
        group_id,
        ge.MemberPaid(group_id=group_id, member_id=held, payment_id="p-held", amount=usd(1333)),
    )
    await stack.publish(
        "p-cap",
        pe.PaymentSucceeded(
            payment_id="p-cap",
            group_id=group_id,
            member_id=captured,
            amount=usd(1333),
            captured=True,
        ),
    )
    await stack.publish(
        group_id, ge.GroupCancelled(group_id=group_id, reason="merchant out of stock")
    )
    # the compensation facts arrive after the cancellation: notices wait for them
    await stack.publish(
        "p-held",
        pe.PaymentVoided(payment_id="p-held", group_id=group_id, member_id=held, amount=usd(1333)),
    )
    await stack.publish(
        "p-cap",
        pe.PaymentRefunded(
            payment_id="p-cap",
            group_id=group_id,
            member_id=captured,
            amount=usd(1333),
            total_refunded=usd(1333),
        ),
    )
    listed = await stack.settled(group_id, count=6 + 2)  # cancel to 3 + the paid notice to 1
    assert all(n.status == SENT for n in listed)
    expected = {
        "Host": "You were not charged.",
        "Held": "The hold on your payment of 13.33 USD has been released.",
        "Captured": "Your payment of 13.33 USD has been refunded.",
    }
    for name, sentence in expected.items():
        mails = [m for m in await stack.mails(emails[name]) if "cancelled" in m["subject"]]
        assert len(mails) == 1, name
        assert sentence in mails[0]["body"], (name, mails[0]["body"])
        assert "Reason: merchant out of stock." in mails[0]["body"]


async def test_expiry_without_settlement_facts_says_release_is_under_way(stack: Stack) -> None:
    group_id, members, emails = await stack.create_group(["Host", "Late"])
    await stack.publish(
        group_id,
        ge.MemberPaid(
            group_id=group_id, member_id=members["Host"], payment_id="p-h", amount=usd(2000)
        ),
    )
    await stack.publish(group_id, ge.GroupExpired(group_id=group_id, reason="deadline passed"))
    await stack.settled(group_id, count=2 + 4)
    [host_mail] = [m for m in await stack.mails(emails["Host"]) if "expired" in m["subject"]]
    assert "The hold on your payment of 20.00 USD is being released." in host_mail["body"]
    [late_mail] = await stack.mails(emails["Late"])
    assert "You were not charged." in late_mail["body"]


async def test_reminder_fallback_and_confirmation_reach_the_right_people(stack: Stack) -> None:
    group_id, members, emails = await stack.create_group(["Host", "Slow", "Quick"])
    reminder = ge.PaymentReminderDue(
        group_id=group_id, member_id=members["Slow"], payment_link="https://pay.test/r/slow"
    )
    fallback = ge.HostFallbackRequested(
        group_id=group_id,
        host_member_id=members["Host"],
        amount=usd(1334),
        payment_id="p-fb",
        payment_link="https://pay.test/fallback/host",
    )
    await stack.publish(group_id, reminder)
    await stack.publish(group_id, fallback)
    await stack.publish(group_id, ge.GroupConfirmed(group_id=group_id, order_id="order-42"))
    await stack.settled(group_id, count=2 + 2 + 6)
    slow = {m["subject"]: m["body"] for m in await stack.mails(emails["Slow"])}
    host = {m["subject"]: m["body"] for m in await stack.mails(emails["Host"])}
    quick = {m["subject"]: m["body"] for m in await stack.mails(emails["Quick"])}
    assert any("https://pay.test/r/slow" in b for s, b in slow.items() if "Reminder" in s)
    assert any("https://pay.test/fallback/host" in b and "13.34 USD" in s for s, b in host.items())
    for got in (slow, host, quick):
        assert any("order-42" in b for s, b in got.items() if "confirmed" in s)
    assert len(slow) == 2
    assert len(host) == 2
    assert len(quick) == 1


async def test_logs_hold_no_email_address(stack: Stack) -> None:
    group_id, members, emails = await stack.create_group(["Priv", "Acy"])
    opened = ge.GroupOpened(
        group_id=group_id,
        total=usd(4000),
        invitations=[
            ge.MemberInvitation(member_id=m, share=usd(2000), payment_link=f"https://p/{m}")
            for m in members.values()
        ],
    )
    await stack.publish(group_id, opened)
    await stack.settled(group_id, count=4)
    for name in members:
        assert len(await stack.mails(emails[name])) == 1
    assert len(stack.emails) >= 10
    for proc in stack.procs:
        if proc.name == "group":
            continue  # the group service's own logs are its tests' business
        text = proc.log_text()
        assert "notification" in text or "SMTP sink" in text  # the log is really there
        leaked = [e for e in stack.emails if e in text]
        assert leaked == [], (proc.name, leaked)
        assert not EMAIL_RE.search(text), (proc.name, EMAIL_RE.search(text))
