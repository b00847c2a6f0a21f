"""The notification service layer against fakes: group events become notification rows
(once per event, recipient and channel), payment facts merge, and ListNotifications shows
each caller what they may see. No Postgres, NATS or group service involved."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
from google.protobuf.message import Message

from mppo.clients.group import GroupView
from mppo.common.v1 import money_pb2
from mppo.group.v1 import group_events_pb2 as ge
from mppo.payment.v1 import payment_events_pb2 as pe
from mppo.platform.errors import InvalidArgumentError, NotFoundError, UnavailableError
from mppo.platform.event_types import new_event
from mppo.platform.identity import Caller
from notification_svc.domain.model import Channel, Kind, Status
from notification_svc.domain.outcome import PaymentFacts
from notification_svc.service_layer.commands import ListNotifications
from notification_svc.service_layer.handlers import (
    PAYMENT_HANDLERS,
    EventHandler,
    GroupEventHandlers,
    list_notifications,
)
from tests.unit.notification.fakes import FakeContacts, FakeGroups, FakeUnitOfWork, contact

GROUP = "g1"


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency_code="USD")


class Harness:
    """One service instance over fakes: the group handlers, their uow, and the wake-ups."""

    def __init__(self, *, webhook_enabled: bool = False) -> None:
        self.contacts = FakeContacts(
            {GROUP: [contact("host", "HOST"), contact("ann"), contact("bo", email=False)]}
        )
        self.wakes = 0
        self.uow = FakeUnitOfWork()
        self.group = GroupEventHandlers(
            self.contacts, webhook_enabled=webhook_enabled, wake=self._wake
        ).handlers()

    def _wake(self) -> None:
        self.wakes += 1

    async def apply(self, message: Message, event_id: str | None = None) -> None:
        """What the inbox consumer does: one unit of work per event, committed."""
        handlers: dict[type[Message], EventHandler] = {**self.group, **PAYMENT_HANDLERS}
        event = new_event(GROUP, message)
        if event_id is not None:
            event = dataclasses.replace(event, event_id=event_id)
        async with self.uow as uow:
            uow.event = event
            await handlers[type(message)](message, uow)
            await uow.commit()


def opened() -> ge.GroupOpened:
    return ge.GroupOpened(
        group_id=GROUP,
        total=usd(3000),
        invitations=[
            ge.MemberInvitation(
                member_id=m, share=usd(1000), payment_id=f"p-{m}", payment_link=f"https://p/{m}"
            )
            for m in ("host", "ann", "bo", "gone")
        ],
    )


async def test_group_opened_invites_each_member_with_their_own_link_then_wakes_the_sender() -> None:
    h = Harness(webhook_enabled=True)
    await h.apply(opened(), event_id="e1")
    rows = h.uow.notifications.all()
    emails = {n.member_id: n for n in rows if n.channel is Channel.EMAIL}
    hooks = {n.member_id for n in rows if n.channel is Channel.WEBHOOK}
    assert set(emails) == {"host", "ann"}  # bo has no address, "gone" left the group
    assert hooks == {"host", "ann", "bo"}
    assert {n.kind for n in rows} == {Kind.INVITATION}
    assert {n.status for n in rows} == {Status.PENDING}
    assert {(n.event_id, n.event_type) for n in rows} == {("e1", "group.opened")}
    ann = emails["ann"].params
    assert ann["payment_link"] == "https://p/ann"
    assert (ann["share_minor"], ann["total_minor"], ann["currency"]) == ("1000", "3000", "USD")
    assert ann["role"] == "GUEST"
    assert emails["host"].params["role"] == "HOST"
    assert h.uow.commits == 1
    assert h.wakes == 1  # after the commit, once
    # named recipients may be served from the contact cache
    assert h.contacts.calls == [(GROUP, ("host", "ann", "bo", "gone"), False)]


async def test_the_same_event_again_adds_nothing_and_wakes_nobody() -> None:
    h = Harness()
    await h.apply(opened(), event_id="e1")
    await h.apply(opened(), event_id="e1")
    assert len(h.uow.notifications.all()) == 2
    assert h.wakes == 1
    await h.apply(opened(), event_id="e2")  # another event: its own notifications
    assert len(h.uow.notifications.all()) == 4
    assert h.wakes == 2


async def test_group_wide_notices_read_the_current_membership() -> None:
    h = Harness()
    await h.apply(ge.GroupConfirmed(group_id=GROUP, order_id="o-1"))
    assert h.contacts.calls == [(GROUP, (), True)]
    rows = h.uow.notifications.all()
    assert {(n.member_id, n.kind) for n in rows} == {
        ("host", Kind.GROUP_CONFIRMED),
        ("ann", Kind.GROUP_CONFIRMED),
    }
    assert rows[0].params["order_id"] == "o-1"


async def test_member_paid_records_the_secured_payment_and_tells_only_the_payer() -> None:
    h = Harness()
    await h.apply(
        ge.MemberPaid(
            group_id=GROUP, member_id="ann", payment_id="p1", amount=usd(1000), remaining_members=2
        )
    )
    [row] = h.uow.notifications.all()
    assert (row.member_id, row.kind) == ("ann", Kind.PAYMENT_RECEIVED)
    assert row.params["remaining_members"] == "2"
    assert await h.uow.payments.for_member(GROUP, "ann") == [
        PaymentFacts("p1", secured=True, amount_minor=1000, currency="USD")
    ]


@pytest.mark.parametrize(("captured", "param"), [(False, "false"), (True, "true")])
async def test_member_paid_passes_on_whether_the_payment_was_captured(
    captured: bool, param: str
) -> None:
    h = Harness()
    await h.apply(
        ge.MemberPaid(
            group_id=GROUP,
            member_id="ann",
            payment_id="p1",
            amount=usd(1000),
            remaining_members=0,
            captured=captured,
        )
    )
    [row] = h.uow.notifications.all()
    assert row.params["captured"] == param


async def test_a_named_recipient_no_longer_in_the_group_gets_nothing_and_no_wake() -> None:
    h = Harness()
    await h.apply(ge.PaymentReminderDue(group_id=GROUP, member_id="gone", payment_link="x"))
    assert h.uow.notifications.all() == []
    assert h.wakes == 0


async def test_a_contact_outage_fails_the_event_so_the_consumer_retries_it() -> None:
    h = Harness()
    h.contacts.down = True
    with pytest.raises(UnavailableError):
        await h.apply(ge.GroupCancelled(group_id=GROUP, reason="r"))
    assert h.uow.notifications.all() == []
    assert (h.uow.commits, h.wakes) == (0, 0)


async def test_payment_facts_merge_in_any_order_and_flags_only_turn_on() -> None:
    h = Harness()
    refunded = pe.PaymentRefunded(
        payment_id="p1",
        group_id=GROUP,
        member_id="ann",
        amount=usd(1000),
        total_refunded=usd(1000),
    )
    await h.apply(refunded)  # the refund overtook the success
    await h.apply(
        pe.PaymentSucceeded(
            payment_id="p1", group_id=GROUP, member_id="ann", amount=usd(1000), captured=True
        )
    )
    await h.apply(pe.PaymentVoided(payment_id="p2", group_id=GROUP, member_id="ann"))
    await h.apply(
        pe.PaymentCaptured(payment_id="p3", group_id=GROUP, member_id="bo", amount=usd(5))
    )
    facts = {f.payment_id: f for f in await h.uow.payments.for_member(GROUP, "ann")}
    assert facts["p1"] == PaymentFacts(
        "p1", secured=True, captured=True, refunded=True, amount_minor=1000, currency="USD"
    )
    assert facts["p2"] == PaymentFacts("p2", voided=True)
    [bo] = await h.uow.payments.for_member(GROUP, "bo")
    assert (bo.captured, bo.secured) == (True, False)
    assert h.uow.notifications.all() == []  # payment facts notify nobody by themselves
    assert h.wakes == 0


async def _listing(h: Harness, caller: Caller, **filters: object) -> list[tuple[str, Channel]]:
    views = FakeGroups(
        {
            ("u-host", GROUP): GroupView(False, True, frozenset({"host"})),
            ("u-ann", GROUP): GroupView(False, False, frozenset({"ann"})),
        }
    )
    handler = partial(list_notifications, groups=views)
    found, _ = await handler(
        ListNotifications(caller=caller, group_id=str(filters.pop("group_id", GROUP)), **filters),  # type: ignore[arg-type]
        h.uow.sibling(),
    )
    return [(n.member_id, n.channel) for n in found]


async def test_the_host_and_services_see_every_notification_a_member_only_their_own() -> None:
    h = Harness(webhook_enabled=True)
    await h.apply(ge.GroupConfirmed(group_id=GROUP, order_id="o"))
    everything = {
        ("host", Channel.EMAIL),
        ("ann", Channel.EMAIL),
        ("host", Channel.WEBHOOK),
        ("ann", Channel.WEBHOOK),
        ("bo", Channel.WEBHOOK),
    }
    assert set(await _listing(h, Caller(user_id="u-host"))) == everything
    assert set(await _listing(h, Caller(service="gateway"))) == everything
    assert set(await _listing(h, Caller(user_id="u-ann"))) == {
        ("ann", Channel.EMAIL),
        ("ann", Channel.WEBHOOK),
    }
    assert await _listing(h, Caller(user_id="u-host"), member_id="bo") == [("bo", Channel.WEBHOOK)]
    assert set(await _listing(h, Caller(user_id="u-host"), channel=Channel.EMAIL)) == {
        ("host", Channel.EMAIL),
        ("ann", Channel.EMAIL),
    }
    assert await _listing(h, Caller(user_id="u-host"), kind=Kind.INVITATION) == []


async def test_listing_needs_a_group_the_caller_may_see() -> None:
    h = Harness()
    with pytest.raises(InvalidArgumentError):
        await _listing(h, Caller(user_id="u-host"), group_id="")
    with pytest.raises(NotFoundError):
        await _listing(h, Caller(user_id="stranger"))
