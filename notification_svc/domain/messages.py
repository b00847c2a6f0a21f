"""Rendering: the e-mail text and the webhook body of each kind of notification.

Rendering happens at delivery time from the notification's stored, non-personal facts
(``params``) plus the recipient's display name, which is fetched for the delivery and never
stored or logged here. Amounts are integer minor units formatted with their ISO 4217 exponent
(the one table, :mod:`mppo.platform.money`), written as the group page writes them:
``12.34 USD``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mppo.platform.money import format_minor
from notification_svc.domain.model import Kind
from notification_svc.domain.outcome import Outcome


@dataclass(frozen=True)
class EmailContent:
    """Subject and plain-text body of one e-mail."""

    subject: str
    body: str


def format_money(amount_minor: int | str, currency: str) -> str:
    """``1050, "USD"`` → ``"10.50 USD"``, as the group page writes it: the one ISO 4217 table,
    integer arithmetic only."""
    return format_minor(int(amount_minor), currency.strip().upper())


def format_time(rfc3339: str) -> str:
    """``2030-01-02T03:04:05.000000Z`` → ``2030-01-02 03:04 UTC`` (unparseable text kept)."""
    try:
        moment = datetime.fromisoformat(rfc3339)
    except ValueError:
        return rfc3339
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _money(params: Mapping[str, str], key: str = "amount_minor") -> str:
    return format_money(params.get(key, "0") or "0", params.get("currency", ""))


_OUTCOME_TEXT = {
    Outcome.NOTHING_CHARGED: "You were not charged.",
    Outcome.HOLD_RELEASED: "The hold on your payment of {amount} has been released.",
    Outcome.REFUNDED: "Your payment of {amount} has been refunded.",
    Outcome.HOLD_RELEASE_PENDING: "The hold on your payment of {amount} is being released.",
    Outcome.REFUND_PENDING: "Your payment of {amount} is being refunded.",
}


def outcome_sentence(outcome: Outcome, params: Mapping[str, str]) -> str:
    """The sentence that tells a member what happened to their money."""
    return _OUTCOME_TEXT[outcome].format(amount=_money(params, "settled_minor"))


def _pay_lines(lead: str, params: Mapping[str, str], page_link: str) -> list[str]:
    """Where to pay: the member's group page when there is one (the provider's page stays
    reachable from there and is named too), else the provider's page."""
    link = params.get("payment_link", "")
    if not page_link:
        return [f"{lead}:", link]
    lines = [f"{lead} (see your group, who has paid, and pay):", page_link]
    if link:
        lines.append(f"Or pay straight on the payment page: {link}")
    return lines


def render_email(
    kind: Kind, params: Mapping[str, str], display_name: str, *, page_link: str = ""
) -> EmailContent:
    """The e-mail for ``kind``; settlement kinds need ``params["outcome"]`` set. ``page_link``
    is the member's group page (gateway/group_page.py), which the invitation, the reminder and
    the host's fallback request lead to when given."""
    group = params.get("group_id", "")
    hello = f"Hi {display_name}," if display_name else "Hello,"
    match kind:
        case Kind.INVITATION:
            subject = f"You're invited to pay your share: {_money(params, 'share_minor')}"
            lines = [
                f"Your share of the group order is {_money(params, 'share_minor')} "
                f"(group total {_money(params, 'total_minor')}).",
                *_pay_lines(
                    f"Pay here before {format_time(params.get('deadline', ''))}",
                    params,
                    page_link,
                ),
                "Nothing is charged until the whole group has paid and the order is accepted.",
            ]
        case Kind.REMINDER:
            subject = "Reminder: your share of the group order is still unpaid"
            lines = [
                f"The group pays by {format_time(params.get('deadline', ''))}.",
                *_pay_lines("Pay your share here", params, page_link),
            ]
        case Kind.PAYMENT_RECEIVED:
            subject = f"Payment received: {_money(params)}"
            remaining = params.get("remaining_members", "0")
            # a provider that cannot hold money (a Razorpay payment link) captures at once
            held = (
                "It is charged now and refunded if the order is not confirmed."
                if params.get("captured") == "true"
                else "It is held, not charged, until the order is confirmed."
            )
            lines = [
                f"We received your payment of {_money(params)}. {held}",
                f"Members still to pay: {remaining}.",
            ]
        case Kind.GROUP_CONFIRMED:
            subject = "Your group order is confirmed"
            lines = [
                "Everyone paid and the merchant accepted the order.",
                f"Order reference: {params.get('order_id', '')}.",
            ]
        case Kind.GROUP_EXPIRED | Kind.GROUP_CANCELLED:
            verb = "expired" if kind is Kind.GROUP_EXPIRED else "was cancelled"
            subject = f"Your group order {verb}"
            lines = [f"The group order {verb}."]
            if params.get("reason"):
                lines.append(f"Reason: {params['reason']}.")
            lines.append(outcome_sentence(Outcome(params["outcome"]), params))
        case Kind.HOST_FALLBACK:
            subject = f"Please pay the remaining {_money(params)} of your group order"
            lines = [
                f"Not every member paid in time, so the remaining {_money(params)} moved to "
                "you as the host.",
                *_pay_lines(
                    f"Pay here before {format_time(params.get('grace_deadline', ''))}",
                    params,
                    page_link,
                ),
            ]
    body = "\n\n".join([hello, *lines, f"Group: {group}", "-- MPPO"]) + "\n"
    return EmailContent(subject=subject, body=body)


def webhook_body(
    *,
    notification_id: str,
    kind: Kind,
    group_id: str,
    member_id: str,
    event_id: str,
    event_type: str,
    created_at: str,
    params: Mapping[str, str],
) -> bytes:
    """The JSON a webhook carries: ids and non-personal facts only."""
    document = {
        "id": notification_id,
        "type": f"notification.{kind.value.lower()}",
        "kind": kind.value,
        "group_id": group_id,
        "member_id": member_id,
        "event_id": event_id,
        "event_type": event_type,
        "created_at": created_at,
        "data": dict(sorted(params.items())),
    }
    return json.dumps(document, separators=(",", ":")).encode()
