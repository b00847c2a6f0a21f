"""The sender: a :class:`~mppo.platform.worker.LoopWorker` delivering committed notification
rows in batches, retrying each with bounded backoff.

Rows are claimed (``FOR UPDATE SKIP LOCKED``, then leased) in a short transaction and
delivered outside it; the outcome is recorded in another. A process that dies after
delivering but before recording delivers again when the lease runs out; the SMTP
``Message-ID`` and the webhook ``Mppo-Notification-Id`` stay the same so receivers can tell.
Expiry/cancellation notices wait (up to ``settle_seconds``) until the member's payments are
voided or refunded, so they can say which happened. Logs carry ids only, never addresses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mppo.platform.errors import UnavailableError
from mppo.platform.events import format_timestamp
from mppo.platform.logs import bind_ids
from mppo.platform.worker import LoopWorker
from notification_svc.adapters.contacts import ContactDirectory
from notification_svc.domain.messages import EmailContent, render_email, webhook_body
from notification_svc.domain.model import (
    SETTLEMENT_KINDS,
    Channel,
    Contact,
    DeliveryError,
    Notification,
)
from notification_svc.domain.outcome import SETTLED, outcome_for
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

logger = logging.getLogger(__name__)


class Mailer(Protocol):
    """Sends one e-mail."""

    async def send(
        self,
        *,
        delivery_id: str,
        to: str,
        display_name: str,
        content: EmailContent,
        headers: dict[str, str],
    ) -> None:
        """Deliver or raise DeliveryError."""


class Poster(Protocol):
    """Posts one webhook."""

    async def send(self, *, delivery_id: str, body: bytes) -> None:
        """Deliver or raise DeliveryError."""


@dataclass(frozen=True)
class SenderPolicy:
    """Retry budget and pacing."""

    max_attempts: int = 6
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    poll_seconds: float = 1.0
    settle_seconds: float = 30.0
    batch: int = 20
    lease_seconds: float = 60.0

    def retry_delay(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed attempts."""
        return float(
            min(self.retry_base_seconds * 2 ** max(attempts - 1, 0), self.retry_max_seconds)
        )


class _NotSettledError(Exception):
    """The row is not ready to be rendered yet (payments still settling)."""


class Sender(LoopWorker):
    """Background worker delivering PENDING notifications (woken after new rows commit)."""

    name = "notification sender"

    def __init__(
        self,
        uow: Callable[[], NotificationUnitOfWork],
        contacts: ContactDirectory,
        mailer: Mailer,
        poster: Poster | None,
        policy: SenderPolicy,
    ) -> None:
        super().__init__(poll_interval=policy.poll_seconds)
        self._uow = uow
        self._contacts = contacts
        self._mailer = mailer
        self._poster = poster
        self._policy = policy

    async def work(self) -> bool:
        """Claim one batch of due rows and deliver them; True when any was claimed."""
        return await self.run_once() > 0

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver them; returns how many were claimed."""
        async with self._uow() as uow:
            rows = await uow.notifications.claim_due(
                limit=self._policy.batch,
                lease=timedelta(seconds=self._policy.lease_seconds),
            )
            await uow.commit()
        if not rows:
            return 0
        contacts = await self._load_contacts(rows)
        sent = await asyncio.gather(*(self._deliver(row, contacts) for row in rows))
        delivered = [row for row, ok in zip(rows, sent, strict=True) if ok]
        if delivered:
            # one transaction records the batch (a crash before it re-sends after the lease,
            # as for a single row; receivers see the same ids)
            async with self._uow() as uow:
                await uow.notifications.mark_sent([r.notification_id for r in delivered])
                await uow.commit()
            for row in delivered:
                with bind_ids(group_id=row.group_id, member_id=row.member_id):
                    logger.info(
                        "notification %s %s/%s sent (attempt %s)",
                        row.notification_id,
                        row.kind.value,
                        row.channel.value,
                        row.attempts + 1,
                    )
        return len(rows)

    async def _load_contacts(
        self, rows: Sequence[Notification]
    ) -> dict[str, dict[str, Contact] | None]:
        """Contacts of each group with an e-mail to send (None where the lookup failed)."""
        found: dict[str, dict[str, Contact] | None] = {}
        needed: dict[str, set[str]] = {}
        for row in rows:
            if row.channel is Channel.EMAIL:
                needed.setdefault(row.group_id, set()).add(row.member_id)
        for group_id, member_ids in needed.items():
            try:
                listed = await self._contacts.contacts(group_id, covering=member_ids)
                found[group_id] = {c.member_id: c for c in listed}
            except UnavailableError:
                found[group_id] = None
        return found

    async def _deliver(
        self, row: Notification, contacts: dict[str, dict[str, Contact] | None]
    ) -> bool:
        """Deliver one row: True when sent (the caller records it), else False (recorded)."""
        with bind_ids(
            group_id=row.group_id,
            member_id=row.member_id,
            notification_id=row.notification_id,
            event_id=row.event_id,
        ):
            try:
                params = await self._params(row)
                if row.channel is Channel.EMAIL:
                    await self._send_email(row, params, contacts.get(row.group_id))
                else:
                    await self._send_webhook(row, params)
            except _NotSettledError:
                async with self._uow() as uow:
                    await uow.notifications.defer(
                        row.notification_id, seconds=min(self._policy.poll_seconds * 2, 1.0)
                    )
                    await uow.commit()
                return False
            except DeliveryError as exc:
                await self._failed(row, exc)
                return False
            except Exception as exc:  # unexpected: retry, and log the type only
                await self._failed(row, DeliveryError(f"unexpected {type(exc).__name__}"))
                return False
            return True

    async def _params(self, row: Notification) -> dict[str, str]:
        params = dict(row.params)
        if row.kind not in SETTLEMENT_KINDS:
            return params
        async with self._uow() as uow:
            facts = await uow.payments.for_member(row.group_id, row.member_id)
        outcome = outcome_for(facts)
        age = (datetime.now(UTC) - row.created_at).total_seconds()
        if outcome not in SETTLED and age < self._policy.settle_seconds:
            raise _NotSettledError
        secured = [f for f in facts if f.secured or f.captured or f.refunded]
        params["outcome"] = outcome.value
        params["settled_minor"] = str(sum(f.amount_minor for f in secured))
        if secured and not params.get("currency"):
            params["currency"] = secured[0].currency
        return params

    async def _send_email(
        self,
        row: Notification,
        params: dict[str, str],
        group_contacts: dict[str, Contact] | None,
    ) -> None:
        if group_contacts is None:
            raise DeliveryError("group service unavailable for contacts")
        contact = group_contacts.get(row.member_id)
        if contact is None or not contact.email:
            raise DeliveryError("recipient has no e-mail address", permanent=True)
        content = render_email(row.kind, params, contact.display_name)
        await self._mailer.send(
            delivery_id=row.notification_id,
            to=contact.email,
            display_name=contact.display_name,
            content=content,
            headers={
                "X-Mppo-Notification-Id": row.notification_id,
                "X-Mppo-Group-Id": row.group_id,
                "X-Mppo-Member-Id": row.member_id,
                "X-Mppo-Kind": row.kind.value,
            },
        )

    async def _send_webhook(self, row: Notification, params: dict[str, str]) -> None:
        if self._poster is None:
            raise DeliveryError("webhook URL not configured", permanent=True)
        body = webhook_body(
            notification_id=row.notification_id,
            kind=row.kind,
            group_id=row.group_id,
            member_id=row.member_id,
            event_id=row.event_id,
            event_type=row.event_type,
            created_at=format_timestamp(row.created_at),
            params=params,
        )
        await self._poster.send(delivery_id=row.notification_id, body=body)

    async def _failed(self, row: Notification, exc: DeliveryError) -> None:
        attempts = row.attempts + 1
        final = exc.permanent or attempts >= self._policy.max_attempts
        retry_in = None if final else self._policy.retry_delay(attempts)
        async with self._uow() as uow:
            await uow.notifications.mark_attempt_failed(
                row.notification_id, error=exc.reason, retry_in=retry_in
            )
            await uow.commit()
        if final:
            logger.warning(
                "notification %s %s/%s FAILED after %s attempts: %s",
                row.notification_id,
                row.kind.value,
                row.channel.value,
                attempts,
                exc.reason,
            )
        else:
            logger.info(
                "notification %s %s/%s attempt %s failed (%s); retry in %.1fs",
                row.notification_id,
                row.kind.value,
                row.channel.value,
                attempts,
                exc.reason,
                retry_in,
            )
