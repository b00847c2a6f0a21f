"""A member who never logged in retries a declined payment from the group page: the gateway,
which found the member by their invite token, asks RetryPayment for that member as itself.
Other services may not; the group service still refuses what is not a failed payment."""

from __future__ import annotations

import pytest

from group_svc.domain.model import Group, MemberStatus
from group_svc.service_layer import commands as c
from group_svc.service_layer.handlers import GroupHandlers
from mppo.payment.v1 import payment_events_pb2
from mppo.platform.errors import FailedPreconditionError, PermissionDeniedError
from mppo.platform.identity import Caller
from tests.unit.group.fakes import Clock, FakePayments, FakeUnitOfWork
from tests.unit.group.test_group_handlers import (
    clock,
    handlers,
    load,
    opened,
    orders,
    pay,
    payments,
    uow,
)

__all__ = ["clock", "handlers", "orders", "payments", "uow"]  # the fixtures, shared

GATEWAY = Caller(service="gateway")


async def decline(
    handlers: GroupHandlers, uow: FakeUnitOfWork, payments: FakePayments, group: Group, index: int
) -> str:
    member = group.members[index]
    intent = payments.intents[(group.group_id, member.member_id, 1)]
    async with uow:
        await handlers.payment_failed(
            payment_events_pb2.PaymentFailed(
                payment_id=intent.payment_id,
                group_id=group.group_id,
                member_id=member.member_id,
                attempt=1,
            ),
            uow,
        )
        await uow.commit()
    return intent.payment_id


async def test_the_gateway_retries_a_declined_payment_for_the_member(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=2, total=600)
    guest = group.members[2]  # an invited guest nobody bound to a user
    first = await decline(handlers, uow, payments, group, 2)
    assert (await load(uow, group.group_id)).members[2].status is MemberStatus.PAYMENT_FAILED
    retried = await handlers.retry_payment(
        c.RetryPayment(GATEWAY, group.group_id, guest.member_id), uow
    )
    member = retried.member(guest.member_id)
    assert (member.attempt, member.status) == (2, MemberStatus.AWAITING_PAYMENT)
    attempt = retried.current_attempt(member)
    assert attempt is not None
    second = payments.intents[(group.group_id, guest.member_id, 2)]
    assert (attempt.payment_id, attempt.payment_link) == (second.payment_id, second.payment_link)
    assert second.payment_link
    assert second.payment_id != first
    assert payments.closed == [first]  # the dead checkout is closed first
    # again: nothing left to retry
    with pytest.raises(FailedPreconditionError):
        await handlers.retry_payment(c.RetryPayment(GATEWAY, group.group_id, guest.member_id), uow)
    await pay(handlers, uow, payments, group, 2, attempt=2)
    assert (await load(uow, group.group_id)).member(guest.member_id).status is MemberStatus.PAID


async def test_other_services_may_not_retry_for_a_member(
    handlers: GroupHandlers, uow: FakeUnitOfWork, clock: Clock, payments: FakePayments
) -> None:
    group = await opened(handlers, uow, clock, guests=1, total=600)
    await decline(handlers, uow, payments, group, 1)
    for service in ("notification", "order", "payment"):
        with pytest.raises(PermissionDeniedError):
            await handlers.retry_payment(
                c.RetryPayment(Caller(service=service), group.group_id, group.members[1].member_id),
                uow,
            )
    assert (await load(uow, group.group_id)).members[1].attempt == 1
