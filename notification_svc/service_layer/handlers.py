"""The notification service's handlers, all of the one shape ``handler(message, uow)``.

Event handlers run inside the inbox's unit of work, so each event's effect happens once:
group events become notification rows (unique per event, recipient and channel), payment
facts are merged into the member's payment record. Nothing is delivered here: the sender
picks the rows up after the transaction commits (and is woken then). The query handler
:func:`list_notifications` answers ``ListNotifications``.

Dependencies (the contact directory, the group service's views, the sender's wake-up) are
bound in :mod:`notification_svc.bootstrap`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from google.protobuf.message import Message

from mppo.clients.group import GroupView
from mppo.group.v1 import group_events_pb2 as ge
from mppo.payment.v1 import payment_events_pb2 as pe
from mppo.platform.errors import FieldViolation, InvalidArgumentError
from mppo.platform.identity import Caller
from mppo.platform.logs import bind_ids
from notification_svc.adapters.contacts import ContactDirectory
from notification_svc.domain.model import Notification, plan
from notification_svc.service_layer.commands import ListNotifications
from notification_svc.service_layer.triggers import TRIGGERING_EVENTS, trigger_for
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

logger = logging.getLogger(__name__)

EventHandler = Callable[[Any, NotificationUnitOfWork], Awaitable[None]]


class GroupViews(Protocol):
    """Who may see what about a group (the group service, via GroupClient.view)."""

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        """The caller's view; NotFoundError when they may not see the group at all."""


class GroupEventHandlers:
    """Turn group events into notification rows; wakes the sender after a commit adds some."""

    def __init__(
        self,
        contacts: ContactDirectory,
        *,
        webhook_enabled: bool,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._contacts = contacts
        self._webhook_enabled = webhook_enabled
        self._wake = wake

    def handlers(self) -> Mapping[type[Message], EventHandler]:
        """The handler of each group event payload this service consumes."""
        routes: dict[type[Message], EventHandler] = dict.fromkeys(TRIGGERING_EVENTS, self.notify)
        routes[ge.MemberPaid] = self.member_paid
        return routes

    async def member_paid(self, message: ge.MemberPaid, uow: NotificationUnitOfWork) -> None:
        """A member's payment is secured: remember the fact, then tell the member."""
        await uow.payments.record(
            payment_id=message.payment_id,
            group_id=message.group_id,
            member_id=message.member_id,
            amount_minor=message.amount.amount_minor,
            currency=message.amount.currency_code,
            secured=True,
        )
        await self.notify(message, uow)

    async def notify(self, message: Message, uow: NotificationUnitOfWork) -> None:
        """Plan the notifications one group event causes (once per event and recipient)."""
        trigger = trigger_for(message)
        event = uow.event
        if trigger is None or event is None:
            return
        with bind_ids(group_id=trigger.group_id):
            # "every member" reads the current membership; named members may come from the cache
            contacts = await self._contacts.contacts(
                trigger.group_id, covering=trigger.member_ids, fresh=not trigger.member_ids
            )
            planned = plan(trigger, contacts, webhook_enabled=self._webhook_enabled)
            created = await uow.notifications.add(
                event_id=event.event_id, event_type=event.event_type, planned=planned
            )
            logger.info(
                "%s: %s notifications planned (%s new) for %s members",
                event.event_type,
                len(planned),
                created,
                len(contacts),
            )
        if created:
            # wake the sender once the rows are visible, not before (it would find nothing)
            uow.after_commit(self._wake)


async def payment_succeeded(message: pe.PaymentSucceeded, uow: NotificationUnitOfWork) -> None:
    """Money is secured (and perhaps captured at once)."""
    await uow.payments.record(
        payment_id=message.payment_id,
        group_id=message.group_id,
        member_id=message.member_id,
        amount_minor=message.amount.amount_minor,
        currency=message.amount.currency_code,
        secured=True,
        captured=message.captured,
    )


async def payment_captured(message: pe.PaymentCaptured, uow: NotificationUnitOfWork) -> None:
    """A hold became a charge."""
    await uow.payments.record(
        payment_id=message.payment_id,
        group_id=message.group_id,
        member_id=message.member_id,
        amount_minor=message.amount.amount_minor,
        currency=message.amount.currency_code,
        captured=True,
    )


async def payment_voided(message: pe.PaymentVoided, uow: NotificationUnitOfWork) -> None:
    """A hold was released."""
    await uow.payments.record(
        payment_id=message.payment_id,
        group_id=message.group_id,
        member_id=message.member_id,
        amount_minor=message.amount.amount_minor,
        currency=message.amount.currency_code,
        voided=True,
    )


async def payment_refunded(message: pe.PaymentRefunded, uow: NotificationUnitOfWork) -> None:
    """A charge was refunded (the refunded total when the event states it)."""
    await uow.payments.record(
        payment_id=message.payment_id,
        group_id=message.group_id,
        member_id=message.member_id,
        amount_minor=message.total_refunded.amount_minor or message.amount.amount_minor,
        currency=message.amount.currency_code,
        refunded=True,
    )


#: the payment facts that decide "hold released" vs "refunded" (flags only ever turn on)
PAYMENT_HANDLERS: Mapping[type[Message], EventHandler] = {
    pe.PaymentSucceeded: payment_succeeded,
    pe.PaymentCaptured: payment_captured,
    pe.PaymentVoided: payment_voided,
    pe.PaymentRefunded: payment_refunded,
}


async def list_notifications(
    cmd: ListNotifications, uow: NotificationUnitOfWork, *, groups: GroupViews
) -> tuple[list[Notification], str]:
    """One page of a group's notifications, oldest first: the host sees all, a member their
    own; and the id of the last notification the page covered when more follow ("" on the
    last page). Rows the caller may not see are skipped after the read (a page may be short)."""
    if not cmd.group_id:
        raise InvalidArgumentError("group_id is required", [FieldViolation("group_id", "required")])
    view = await groups.view(cmd.caller, cmd.group_id)
    async with uow:
        found = await uow.notifications.for_group(
            group_id=cmd.group_id,
            member_id=cmd.member_id,
            kind=cmd.kind,
            channel=cmd.channel,
            after=cmd.after,
            limit=cmd.page_size + 1,
        )
    more = found[cmd.page_size - 1].notification_id if len(found) > cmd.page_size else ""
    return [n for n in found[: cmd.page_size] if view.may_see_member(n.member_id)], more
