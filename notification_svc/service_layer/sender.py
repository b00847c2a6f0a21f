"""The sender: a :class:`~mppo.platform.worker.LoopWorker` delivering committed notification
rows in batches, retrying each with bounded backoff.

A round claims due rows (``FOR UPDATE SKIP LOCKED``, then leased: one statement), delivers them
outside any transaction and records every row's outcome (sent, retry later, failed, not ready
yet) in one more statement. A process that dies after delivering but before recording delivers
again when the lease runs out; the SMTP ``Message-ID`` and the webhook ``Mppo-Notification-Id``
stay the same so receivers can tell. Expiry/cancellation notices wait (up to
``settle_seconds``) until the member's payments are voided or refunded, so they can say which
happened. Logs carry ids only, never addresses.

A round that claimed less than a batch and delivered all of it left nothing due behind it, so
the loop's next round (it runs again at once after a busy one) asks the database nothing unless
a commit woke the sender meanwhile: new rows come with a wake-up, retries and lost leases
become due with time, which is what the poll interval is for.
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
from notification_svc.adapters.page_links import PageLinks
from notification_svc.domain.messages import EmailContent, render_email, webhook_body
from notification_svc.domain.model import (
    SETTLEMENT_KINDS,
    Channel,
    Contact,
    DeliveryError,
    DeliveryResult,
    Kind,
    Notification,
    Result,
)
from notification_svc.domain.outcome import SETTLED, outcome_for
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork

#: e-mails that link to the member's group page (gateway/group_page.py) when one is configured
PAGE_LINK_KINDS = frozenset({Kind.INVITATION, Kind.REMINDER, Kind.HOST_FALLBACK})

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
        page_links: PageLinks | None = None,
    ) -> None:
        super().__init__(poll_interval=policy.poll_seconds)
        self._page_links = page_links
        self._uow = uow
        self._contacts = contacts
        self._mailer = mailer
        self._poster = poster
        self._policy = policy
        self._wakes = 0
        #: the wake-up count when a round last drained what was due (see work)
        self._drained_at: int | None = None

    def wake(self) -> None:
        """Run a round soon: a commit made rows due (counted, see :meth:`work`)."""
        self._wakes += 1
        super().wake()

    async def work(self) -> bool:
        """Claim one batch of due rows and deliver them; True when any was claimed.

        Right after a round that drained what was due, and with no wake-up since, there is
        nothing to claim: False without a query.
        """
        drained_at, self._drained_at = self._drained_at, None
        if drained_at is not None and drained_at == self._wakes:
            return False
        return await self.run_once() > 0

    async def run_once(self) -> int:
        """Claim one batch of due rows, deliver them and record the outcomes; returns how many
        were claimed."""
        wakes = self._wakes
        async with self._uow() as uow:
            rows = await uow.notifications.claim_due(
                limit=self._policy.batch,
                lease=timedelta(seconds=self._policy.lease_seconds),
            )
            await uow.commit()
        if not rows:
            return 0
        contacts = await self._load_contacts(rows)
        results = await asyncio.gather(*(self._deliver(row, contacts) for row in rows))
        # one statement records the round (a crash before it re-sends after the lease, as for
        # a single row; receivers see the same ids)
        async with self._uow() as uow:
            await uow.notifications.record(results)
            await uow.commit()
        for row, result in zip(rows, results, strict=True):
            self._log(row, result)
        if len(rows) < self._policy.batch and all(r.result is Result.SENT for r in results):
            self._drained_at = wakes
        return len(rows)

    def _log(self, row: Notification, result: DeliveryResult) -> None:
        with bind_ids(
            group_id=row.group_id,
            member_id=row.member_id,
            notification_id=row.notification_id,
            event_id=row.event_id,
        ):
            attempts = row.attempts + 1
            match result.result:
                case Result.SENT:
                    logger.info(
                        "notification %s %s/%s sent (attempt %s)",
                        row.notification_id,
                        row.kind.value,
                        row.channel.value,
                        attempts,
                    )
                case Result.FAILED:
                    logger.warning(
                        "notification %s %s/%s FAILED after %s attempts: %s",
                        row.notification_id,
                        row.kind.value,
                        row.channel.value,
                        attempts,
                        result.error,
                    )
                case Result.RETRY:
                    logger.info(
                        "notification %s %s/%s attempt %s failed (%s); retry in %.1fs",
                        row.notification_id,
                        row.kind.value,
                        row.channel.value,
                        attempts,
                        result.error,
                        result.delay_seconds,
                    )

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
    ) -> DeliveryResult:
        """Deliver one row; what happened is recorded with the rest of the round."""
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
                return DeliveryResult(
                    row.notification_id,
                    Result.DEFERRED,
                    delay_seconds=min(self._policy.poll_seconds * 2, 1.0),
                )
            except DeliveryError as exc:
                return self._failed(row, exc)
            except Exception as exc:  # unexpected: retry, and log the type only
                return self._failed(row, DeliveryError(f"unexpected {type(exc).__name__}"))
            return DeliveryResult(row.notification_id, Result.SENT)

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
        page = ""
        if self._page_links is not None and row.kind in PAGE_LINK_KINDS:
            try:
                page = await self._page_links.link(row.group_id, row.member_id)
            except UnavailableError:
                raise DeliveryError("group service unavailable for the page link") from None
        content = render_email(row.kind, params, contact.display_name, page_link=page)
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

    def _failed(self, row: Notification, exc: DeliveryError) -> DeliveryResult:
        attempts = row.attempts + 1
        if exc.permanent or attempts >= self._policy.max_attempts:
            return DeliveryResult(row.notification_id, Result.FAILED, exc.reason)
        return DeliveryResult(
            row.notification_id, Result.RETRY, exc.reason, self._policy.retry_delay(attempts)
        )
