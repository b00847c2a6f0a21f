"""Requesting payment intents for planned attempts, safely across partial failures.

Planned attempts are rows without a payment id. `complete_intents` asks the payment service
for each (outside any transaction, with a deterministic idempotency key, so a retry after a
crash or a timeout returns the same payment), then stores the answers under the group's row
lock and publishes what became possible: `group.opened` when every intent of a frozen DRAFT
group exists, `group.host_fallback` once the host's fallback intent exists. Whoever calls it
again (OpenGroup retried, the scheduler's next round) resumes where it stopped.
"""

from __future__ import annotations

import logging

from group_svc.adapters.payment_client import Intent
from group_svc.domain.currency import format_minor
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import Group
from group_svc.service_layer import events
from group_svc.service_layer.unit_of_work import Deps, GroupUnitOfWork
from mppo.platform.errors import NotFoundError

logger = logging.getLogger(__name__)


async def complete_intents(deps: Deps, group_id: str, actor: str) -> Group:
    """Request the missing intents, store them, publish what follows; the group after."""
    async with GroupUnitOfWork(deps) as uow:
        group = await uow.groups.get(group_id)
    if group is None:
        raise NotFoundError(f"group {group_id} not found")
    answers: dict[tuple[str, int], Intent] = {}
    for attempt in group.attempts_missing_intent():
        member = group.member(attempt.member_id)
        answers[(attempt.member_id, attempt.attempt)] = await deps.payments.create_intent(
            group_id=group.group_id,
            member_id=attempt.member_id,
            attempt=attempt.attempt,
            amount_minor=attempt.amount_minor,
            currency_code=group.currency_code,
            description=(
                f"Your share of group order {group.group_id[:8]} at {group.merchant_id}: "
                f"{format_minor(attempt.amount_minor, group.currency_code)}"
            ),
            payer_user_id=member.user_id,
        )
    async with GroupUnitOfWork(deps) as uow:
        locked = await uow.groups.get(group_id, lock=True)
        if locked is None:
            raise NotFoundError(f"group {group_id} not found")
        changed = bool(answers)
        for (member_id, attempt_no), intent in answers.items():
            locked.attach_intent(member_id, attempt_no, intent.payment_id, intent.payment_link)
        if locked.open(actor, deps.clock()):
            changed = True
            uow.collect(events.opened(locked))
        if (
            locked.status is GroupStatus.OPEN
            and locked.fallback_at is not None
            and locked.fallback_notified_at is None
            and not locked.attempts_missing_intent()
        ):
            locked.fallback_notified_at = deps.clock()
            changed = True
            uow.collect(events.host_fallback(locked))
        if changed:
            await uow.groups.save(locked)
            await uow.commit()
    if deps.cache is not None:
        await deps.cache.invalidate(group_id, locked.version)
    return locked
