"""The sender against fakes: batches of due rows delivered by e-mail and webhook, failures
retried with backoff until the attempt budget is spent, expiry notices waiting for the payment
facts to settle, and the loop woken by a commit instead of waiting for its poll."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from mppo.group.v1 import group_events_pb2 as ge
from mppo.platform.event_types import new_event
from notification_svc.domain.model import Channel, DeliveryError, Kind, Planned, Status
from notification_svc.service_layer.handlers import GroupEventHandlers
from notification_svc.service_layer.sender import Sender, SenderPolicy
from tests.unit.notification.fakes import (
    FakeContacts,
    FakeMailer,
    FakePoster,
    FakeUnitOfWork,
    contact,
)

GROUP = "g1"
POLICY = SenderPolicy(max_attempts=3, retry_base_seconds=2.0, poll_seconds=0.05, settle_seconds=30)


class Harness:
    def __init__(self, policy: SenderPolicy = POLICY, *, webhook: bool = True) -> None:
        self.uow = FakeUnitOfWork()
        self.contacts = FakeContacts({GROUP: [contact("host", "HOST"), contact("ann")]})
        self.mailer = FakeMailer()
        self.poster = FakePoster()
        self.sender = Sender(
            self.uow.sibling,
            self.contacts,
            self.mailer,
            self.poster if webhook else None,
            policy,
        )

    async def plan(
        self, kind: Kind, members: list[str], channels: tuple[Channel, ...] = (Channel.EMAIL,)
    ) -> None:
        params = {"group_id": GROUP, "order_id": "o-7", "reason": "deadline passed"}
        await self.uow.notifications.add(
            event_id=f"e-{kind.value}",
            event_type="group.test",
            planned=[
                Planned(kind, GROUP, m, channel, {**params, "role": "GUEST"})
                for m in members
                for channel in channels
            ],
        )

    def status(self) -> dict[tuple[str, Channel], tuple[Status, int, str]]:
        return {
            (n.member_id, n.channel): (n.status, n.attempts, n.last_error)
            for n in self.uow.notifications.all()
        }


async def test_a_batch_goes_out_by_email_and_webhook_and_is_recorded_sent() -> None:
    h = Harness()
    await h.plan(Kind.GROUP_CONFIRMED, ["host", "ann"], (Channel.EMAIL, Channel.WEBHOOK))
    assert await h.sender.work() is True
    assert set(h.status().values()) == {(Status.SENT, 1, "")}
    assert sorted(m.to for m in h.mailer.sent) == ["ann@example.test", "host@example.test"]
    mail = next(m for m in h.mailer.sent if m.to == "ann@example.test")
    assert mail.content.body.startswith("Hi Ann,")
    assert "o-7" in mail.content.body
    assert mail.headers["X-Mppo-Notification-Id"] == mail.delivery_id
    assert mail.headers["X-Mppo-Kind"] == "GROUP_CONFIRMED"
    bodies = [json.loads(body) for _, body in h.poster.posted]
    assert {b["member_id"] for b in bodies} == {"host", "ann"}
    assert all("@" not in body.decode() for _, body in h.poster.posted)
    assert await h.sender.work() is False  # nothing left
    assert len(h.mailer.sent) == 2


async def test_a_failed_attempt_is_retried_after_a_backoff_then_sent() -> None:
    h = Harness()
    await h.plan(Kind.GROUP_CONFIRMED, ["ann"], (Channel.WEBHOOK,))
    h.poster.failures.append(DeliveryError("webhook HTTP 503"))
    await h.sender.work()
    assert h.status() == {("ann", Channel.WEBHOOK): (Status.PENDING, 1, "webhook HTTP 503")}
    [stored] = h.uow.notifications.stored.values()
    wait = (stored.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 1.0 < wait <= 2.0  # retry_base_seconds after the first failure
    assert await h.sender.work() is False  # not due yet
    h.uow.notifications.make_due()
    await h.sender.work()
    assert h.status() == {("ann", Channel.WEBHOOK): (Status.SENT, 2, "webhook HTTP 503")}
    assert len(h.poster.posted) == 1


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    policy = SenderPolicy(retry_base_seconds=1.0, retry_max_seconds=5.0)
    assert [policy.retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_the_attempt_budget_ends_in_failed_and_permanent_errors_at_once() -> None:
    h = Harness()
    await h.plan(Kind.GROUP_CONFIRMED, ["host"], (Channel.WEBHOOK,))
    h.poster.failures += [DeliveryError("webhook HTTP 500")] * 3
    for _ in range(3):
        await h.sender.work()
        h.uow.notifications.make_due()
    assert h.status() == {("host", Channel.WEBHOOK): (Status.FAILED, 3, "webhook HTTP 500")}
    assert await h.sender.work() is False  # FAILED is final
    await h.plan(Kind.GROUP_EXPIRED, ["ann"], (Channel.WEBHOOK,))
    h.uow.notifications.age(60)  # settled long ago, nothing to wait for
    h.poster.failures.append(DeliveryError("webhook HTTP 410", permanent=True))
    await h.sender.work()
    assert h.status()[("ann", Channel.WEBHOOK)] == (Status.FAILED, 1, "webhook HTTP 410")


async def test_no_address_fails_for_good_and_a_contact_outage_is_retried() -> None:
    h = Harness()
    h.contacts.groups[GROUP] = [contact("ann", email=False)]
    await h.plan(Kind.GROUP_CONFIRMED, ["ann"])
    await h.sender.work()
    assert h.status() == {
        ("ann", Channel.EMAIL): (Status.FAILED, 1, "recipient has no e-mail address")
    }
    h2 = Harness()
    h2.contacts.down = True
    await h2.plan(Kind.GROUP_CONFIRMED, ["ann"])
    await h2.sender.work()
    assert h2.status() == {
        ("ann", Channel.EMAIL): (Status.PENDING, 1, "group service unavailable for contacts")
    }
    h2.contacts.down = False
    h2.uow.notifications.make_due()
    await h2.sender.work()
    assert h2.status()[("ann", Channel.EMAIL)][:2] == (Status.SENT, 2)


async def test_expiry_notices_wait_for_the_payment_facts_then_say_what_happened() -> None:
    h = Harness()
    await h.uow.payments.record(
        payment_id="p1",
        group_id=GROUP,
        member_id="ann",
        amount_minor=1500,
        currency="USD",
        secured=True,
    )
    await h.plan(Kind.GROUP_EXPIRED, ["ann"])
    await h.sender.work()
    # still settling: deferred, which is no attempt
    assert h.status() == {("ann", Channel.EMAIL): (Status.PENDING, 0, "")}
    assert h.mailer.sent == []
    await h.uow.payments.record(payment_id="p1", group_id=GROUP, member_id="ann", voided=True)
    h.uow.notifications.make_due()
    await h.sender.work()
    [mail] = h.mailer.sent
    assert "The hold on your payment of 15.00 USD has been released." in mail.content.body
    assert "Reason: deadline passed." in mail.content.body


async def test_after_the_settle_window_the_notice_says_the_release_is_under_way() -> None:
    h = Harness()
    await h.uow.payments.record(
        payment_id="p1",
        group_id=GROUP,
        member_id="ann",
        amount_minor=1500,
        currency="USD",
        secured=True,
    )
    await h.plan(Kind.GROUP_CANCELLED, ["ann", "host"])
    h.uow.notifications.age(31)
    await h.sender.work()
    bodies = {m.to: m.content.body for m in h.mailer.sent}
    assert "is being released" in bodies["ann@example.test"]
    assert "You were not charged." in bodies["host@example.test"]


async def test_a_commit_that_plans_rows_wakes_the_running_sender() -> None:
    h = Harness(SenderPolicy(poll_seconds=30.0), webhook=False)
    handlers = GroupEventHandlers(h.contacts, webhook_enabled=False, wake=h.sender.wake)
    task = asyncio.create_task(h.sender.run())
    try:
        await asyncio.sleep(0.05)  # the first (empty) round is over; the poll is 30 s away
        message = ge.GroupConfirmed(group_id=GROUP, order_id="o-1")
        async with h.uow.sibling() as uow:
            uow.event = new_event(GROUP, message)
            await handlers.notify(message, uow)
            await asyncio.sleep(0.1)
            assert h.mailer.sent == []  # not before the commit
            await uow.commit()
        async with asyncio.timeout(5):
            while len(h.mailer.sent) < 2:
                await h.mailer.delivered.wait()
                h.mailer.delivered.clear()
    finally:
        h.sender.stop()
        await asyncio.wait_for(task, 5)
    assert set(h.status().values()) == {(Status.SENT, 1, "")}
