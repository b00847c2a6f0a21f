"""Event handlers: run inside the inbox transaction, so each event's effect happens once.

Group events become notification rows (unique per event, recipient and channel); payment
facts are merged into ``member_payments``. Nothing is delivered here: the sender picks the
rows up after the transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.event import listen
from sqlalchemy.ext.asyncio import AsyncSession

from mppo.group.v1 import group_events_pb2 as ge
from mppo.payment.v1 import payment_events_pb2 as pe
from mppo.platform.event_types import decode_event
from mppo.platform.events import Event
from mppo.platform.logs import bind_ids
from notification_svc.adapters import repository
from notification_svc.adapters.contacts import ContactDirectory
from notification_svc.domain.model import plan
from notification_svc.service_layer.triggers import trigger_for

logger = logging.getLogger(__name__)

#: the payment-stream subjects whose facts decide "hold released" vs "refunded"
PAYMENT_SUBJECTS = ("payment.succeeded", "payment.captured", "payment.voided", "payment.refunded")


class GroupEventHandler:
    """Turns group events into notification rows."""

    def __init__(
        self,
        contacts: ContactDirectory,
        *,
        webhook_enabled: bool,
        on_created: Callable[[], None] = lambda: None,
    ) -> None:
        self._contacts = contacts
        self._webhook_enabled = webhook_enabled
        self._on_created = on_created

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        """Apply one group event (the inbox transaction commits it)."""
        message = decode_event(event)
        if isinstance(message, ge.MemberPaid):
            await repository.record_payment(
                session,
                payment_id=message.payment_id,
                group_id=message.group_id,
                member_id=message.member_id,
                amount_minor=message.amount.amount_minor,
                currency=message.amount.currency_code,
                secured=True,
            )
        trigger = trigger_for(message)
        if trigger is None:
            return
        with bind_ids(group_id=trigger.group_id):
            # "every member" reads the current membership; named members may come from the cache
            contacts = await self._contacts.contacts(
                trigger.group_id, covering=trigger.member_ids, fresh=not trigger.member_ids
            )
            planned = plan(trigger, contacts, webhook_enabled=self._webhook_enabled)
            created = await repository.add_notifications(
                session, event_id=event.event_id, event_type=event.event_type, planned=planned
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
            listen(session.sync_session, "after_commit", lambda _: self._on_created(), once=True)


async def handle_payment_event(session: AsyncSession, event: Event) -> None:
    """Merge one payment fact (only flags that turn on; any order of arrival)."""
    message = decode_event(event)
    amount_minor: int | None = None
    match message:
        case pe.PaymentSucceeded():
            flags = {"secured": True, "captured": message.captured}
        case pe.PaymentCaptured():
            flags = {"captured": True}
        case pe.PaymentVoided():
            flags = {"voided": True}
        case pe.PaymentRefunded():
            flags = {"refunded": True}
            amount_minor = message.total_refunded.amount_minor or message.amount.amount_minor
        case _:
            return
    await repository.record_payment(
        session,
        payment_id=message.payment_id,
        group_id=message.group_id,
        member_id=message.member_id,
        amount_minor=message.amount.amount_minor if amount_minor is None else amount_minor,
        currency=message.amount.currency_code,
        **flags,
    )
