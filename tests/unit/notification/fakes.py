"""In-memory stand-ins for the notification service's unit of work, repositories and peers
(cosmicpython's fakes): the service layer's tests run without Postgres, NATS or a network."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mppo.clients.group import SERVICE_VIEW, GroupView
from mppo.platform.errors import NotFoundError, UnavailableError
from mppo.platform.identity import Caller
from notification_svc.adapters.repository import NotificationRepository, PaymentFactRepository
from notification_svc.domain.messages import EmailContent
from notification_svc.domain.model import (
    Channel,
    Contact,
    DeliveryError,
    DeliveryResult,
    Kind,
    Notification,
    Planned,
    Result,
    Role,
    Status,
)
from notification_svc.domain.outcome import PaymentFacts
from notification_svc.service_layer.unit_of_work import NotificationUnitOfWork


def _now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass
class Stored:
    """One notification with the delivery bookkeeping the table keeps beside it."""

    notification: Notification
    next_attempt_at: datetime
    lease_until: datetime | None = None


class FakeNotifications(NotificationRepository):
    """The notifications table in a dict, with its unique key and lease rules."""

    def __init__(self) -> None:
        self.stored: dict[str, Stored] = {}

    def all(self) -> list[Notification]:
        """Every notification, oldest first."""
        return [s.notification for s in self.stored.values()]

    def get(self, notification_id: str) -> Notification:
        """One notification by id."""
        return self.stored[notification_id].notification

    def make_due(self) -> None:
        """Time travel: every PENDING row is due now and no lease holds."""
        for s in self.stored.values():
            s.next_attempt_at = _now() - timedelta(microseconds=1)
            s.lease_until = None

    def age(self, seconds: float) -> None:
        """Time travel: every notification was created `seconds` earlier."""
        for s in self.stored.values():
            n = s.notification
            s.notification = dataclasses.replace(
                n, created_at=n.created_at - timedelta(seconds=seconds)
            )

    def _update(self, notification_id: str, **changes: Any) -> None:
        s = self.stored[notification_id]
        s.notification = dataclasses.replace(s.notification, **changes)

    async def add(self, *, event_id: str, event_type: str, planned: Sequence[Planned]) -> int:
        keys = {(n.event_id, n.member_id, n.channel) for n in self.all()}
        created = 0
        for item in planned:
            if (event_id, item.member_id, item.channel) in keys:
                continue
            keys.add((event_id, item.member_id, item.channel))
            notification = Notification(
                notification_id=str(uuid.uuid4()),
                event_id=event_id,
                event_type=event_type,
                group_id=item.group_id,
                member_id=item.member_id,
                kind=item.kind,
                channel=item.channel,
                status=Status.PENDING,
                params=dict(item.params),
                attempts=0,
                last_error="",
                created_at=_now(),
                sent_at=None,
            )
            self.stored[notification.notification_id] = Stored(notification, _now())
            created += 1
        return created

    async def claim_due(self, *, limit: int, lease: timedelta) -> list[Notification]:
        now = _now()
        due = sorted(
            (
                s
                for s in self.stored.values()
                if s.notification.status is Status.PENDING
                and s.next_attempt_at <= now
                and (s.lease_until is None or s.lease_until < now)
            ),
            key=lambda s: s.next_attempt_at,
        )[:limit]
        for s in due:
            s.lease_until = now + lease
        return sorted((s.notification for s in due), key=lambda n: n.created_at)

    async def record(self, results: Sequence[DeliveryResult]) -> None:
        for r in results:
            match r.result:
                case Result.SENT:
                    await self.mark_sent([r.notification_id])
                case Result.FAILED:
                    await self.mark_attempt_failed(r.notification_id, error=r.error, retry_in=None)
                case Result.RETRY:
                    await self.mark_attempt_failed(
                        r.notification_id, error=r.error, retry_in=r.delay_seconds
                    )
                case Result.DEFERRED:
                    await self.defer(r.notification_id, seconds=r.delay_seconds)

    async def mark_sent(self, notification_ids: Sequence[str]) -> None:
        for notification_id in notification_ids:
            s = self.stored[notification_id]
            if s.notification.status is Status.PENDING:
                s.lease_until = None
                self._update(
                    notification_id,
                    status=Status.SENT,
                    sent_at=_now(),
                    attempts=s.notification.attempts + 1,
                )

    async def mark_attempt_failed(
        self, notification_id: str, *, error: str, retry_in: float | None
    ) -> None:
        s = self.stored[notification_id]
        if s.notification.status is not Status.PENDING:
            return
        s.lease_until = None
        changes: dict[str, Any] = {
            "attempts": s.notification.attempts + 1,
            "last_error": error[:500],
        }
        if retry_in is None:
            changes["status"] = Status.FAILED
        else:
            s.next_attempt_at = _now() + timedelta(seconds=retry_in)
        self._update(notification_id, **changes)

    async def defer(self, notification_id: str, *, seconds: float) -> None:
        s = self.stored[notification_id]
        if s.notification.status is Status.PENDING:
            s.next_attempt_at = _now() + timedelta(seconds=seconds)
            s.lease_until = None

    async def for_group(
        self,
        *,
        group_id: str,
        member_id: str = "",
        kind: Kind | None = None,
        channel: Channel | None = None,
        after: str = "",
        limit: int | None = None,
    ) -> list[Notification]:
        found = [
            n
            for n in self.all()
            if n.group_id == group_id
            and (not member_id or n.member_id == member_id)
            and (kind is None or n.kind is kind)
            and (channel is None or n.channel is channel)
        ]
        if after:
            ids = [n.notification_id for n in found]
            found = found[ids.index(after) + 1 :] if after in ids else []
        return found if limit is None else found[:limit]


class FakePaymentFacts(PaymentFactRepository):
    """The member_payments table in a dict, merging facts as the SQL upsert does."""

    def __init__(self) -> None:
        self.facts: dict[str, tuple[str, str, PaymentFacts]] = {}

    async def record(
        self,
        *,
        payment_id: str,
        group_id: str,
        member_id: str,
        amount_minor: int = 0,
        currency: str = "",
        secured: bool = False,
        captured: bool = False,
        voided: bool = False,
        refunded: bool = False,
    ) -> None:
        old_group, old_member, old = self.facts.get(payment_id, ("", "", PaymentFacts(payment_id)))
        self.facts[payment_id] = (
            old_group or group_id,
            old_member or member_id,
            PaymentFacts(
                payment_id=payment_id,
                secured=old.secured or secured,
                captured=old.captured or captured,
                voided=old.voided or voided,
                refunded=old.refunded or refunded,
                amount_minor=max(old.amount_minor, amount_minor),
                currency=old.currency or currency,
            ),
        )

    async def for_member(self, group_id: str, member_id: str) -> list[PaymentFacts]:
        return [f for g, m, f in self.facts.values() if (g, m) == (group_id, member_id)]


class FakeUnitOfWork(NotificationUnitOfWork):
    """The unit of work over the fakes: counts commits, runs after-commit callbacks."""

    def __init__(
        self,
        notifications: FakeNotifications | None = None,
        payments: FakePaymentFacts | None = None,
    ) -> None:
        super().__init__(cast(async_sessionmaker[AsyncSession], None))
        self.notifications: FakeNotifications = notifications or FakeNotifications()
        self.payments: FakePaymentFacts = payments or FakePaymentFacts()
        self.commits = 0

    def sibling(self) -> FakeUnitOfWork:
        """Another unit of work over the same fake tables (a factory's next product)."""
        return FakeUnitOfWork(self.notifications, self.payments)

    async def __aenter__(self) -> Self:
        self._reset()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reset()

    async def commit(self) -> None:
        self.commits += 1
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        self._reset()


def contact(member_id: str, role: str = "GUEST", *, email: bool = True) -> Contact:
    """A member with a display name and (unless told otherwise) an address."""
    return Contact(
        member_id=member_id,
        display_name=member_id.title(),
        email=f"{member_id}@example.test" if email else "",
        role=Role(role),
    )


class FakeContacts:
    """The group service's member contacts, per group; `down` makes look-ups fail."""

    def __init__(self, groups: dict[str, list[Contact]] | None = None) -> None:
        self.groups = groups or {}
        self.down = False
        self.calls: list[tuple[str, tuple[str, ...], bool]] = []

    async def contacts(
        self, group_id: str, *, covering: Collection[str] = (), fresh: bool = False
    ) -> list[Contact]:
        self.calls.append((group_id, tuple(covering), fresh))
        if self.down:
            raise UnavailableError("group service: GetGroupContacts UNAVAILABLE")
        return list(self.groups.get(group_id, []))


class FakeGroups:
    """GroupClient.view over a table of (user, group) → view."""

    def __init__(self, views: dict[tuple[str, str], GroupView] | None = None) -> None:
        self.views = views or {}

    async def view(self, caller: Caller, group_id: str) -> GroupView:
        if caller.service and not caller.user_id:
            return SERVICE_VIEW
        try:
            return self.views[(caller.user_id, group_id)]
        except KeyError:
            raise NotFoundError("group not found") from None


@dataclasses.dataclass
class SentMail:
    delivery_id: str
    to: str
    display_name: str
    content: EmailContent
    headers: dict[str, str]


class FakeMailer:
    """Records e-mails; `failures` queues DeliveryErrors raised by the next sends."""

    def __init__(self) -> None:
        self.sent: list[SentMail] = []
        self.failures: list[DeliveryError] = []
        #: set on every delivered e-mail
        self.delivered = asyncio.Event()

    async def send(
        self,
        *,
        delivery_id: str,
        to: str,
        display_name: str,
        content: EmailContent,
        headers: dict[str, str],
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(SentMail(delivery_id, to, display_name, content, dict(headers)))
        self.delivered.set()


class FakePoster:
    """Records webhooks; `failures` queues DeliveryErrors raised by the next posts."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, bytes]] = []
        self.failures: list[DeliveryError] = []

    async def send(self, *, delivery_id: str, body: bytes) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.posted.append((delivery_id, body))
