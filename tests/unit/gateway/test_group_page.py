"""The members' group page: what one member may see (gateway/group_page.py), the page's
static files (no inline code, text written with textContent only)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from gateway.group_page import CSP, STATIC, NoSuchPageError, member_view
from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_pb2

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TOKENS = {"host": "h" * 32, "gus": "g" * 32, "zed": "z" * 32}


def _usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def _group(status: int = group_pb2.GROUP_STATUS_OPEN) -> group_pb2.GroupOrder:
    group = group_pb2.GroupOrder(
        group_id="00000000-0000-4000-8000-000000000001",
        host_user_id="host-user",
        status=status,  # type: ignore[arg-type]
        items=[
            cart_pb2.LineItem(
                line_id="l0", sku="P", name="Pizza", quantity=1, unit_price_minor=1200
            )
        ],
        tip_minor=300,
        total=_usd(1500),
    )
    group.deadline.FromDatetime(NOW)
    for name, role, paid in (
        ("host", group_pb2.MEMBER_ROLE_HOST, 0),
        ("gus", group_pb2.MEMBER_ROLE_GUEST, 0),
        ("zed", group_pb2.MEMBER_ROLE_GUEST, 500),
    ):
        group.members.append(
            group_pb2.Member(
                member_id=f"m-{name}",
                user_id=f"user-{name}",
                display_name=f"<b>{name}</b>",
                role=role,
                status=(
                    group_pb2.MEMBER_STATUS_PAID
                    if paid
                    else group_pb2.MEMBER_STATUS_AWAITING_PAYMENT
                ),
                share=_usd(500),
                amount_paid=_usd(paid),
                required=True,
                payment_id=f"pay-{name}",
                payment_link=f"https://psp.example/{name}",
                email=f"{name}@example.test",
                invite_token=TOKENS[name],
            )
        )
    return group


def test_a_member_sees_their_share_and_link_and_only_the_others_names() -> None:
    view = member_view(_group(), TOKENS["gus"], NOW)
    assert view["you"] == {
        "name": "<b>gus</b>",
        "host": False,
        "status": "AWAITING_PAYMENT",
        "share": "5.00 USD",
        "paid": "0.00 USD",
        "payLink": "https://psp.example/gus",
        "canRetry": False,
    }
    assert (view["closeReason"], view["endedEarly"]) == ("", False)
    assert view["members"] == [
        {"name": "<b>host</b>", "paid": False, "you": False},
        {"name": "<b>gus</b>", "paid": False, "you": True},
        {"name": "<b>zed</b>", "paid": True, "you": False},
    ]
    assert view["total"] == "15.00 USD"
    assert view["extras"] == [{"name": "Tip", "amount": "3.00 USD"}]
    text = json.dumps(view)
    for other in ("host", "zed"):  # nothing of anyone else beyond the name and "paid"
        for secret in (f"{other}@example.test", TOKENS[other], f"psp.example/{other}", "pay-"):
            assert secret not in text
    assert TOKENS["gus"] not in text
    assert "user-" not in text


@pytest.mark.parametrize("token", ["", "x" * 32, TOKENS["gus"][:-1], TOKENS["gus"] + "g"])
def test_any_other_token_sees_nothing(token: str) -> None:
    with pytest.raises(NoSuchPageError):
        member_view(_group(), token, NOW)


@pytest.mark.parametrize(
    "status", [group_pb2.GROUP_STATUS_CONFIRMED, group_pb2.GROUP_STATUS_EXPIRED]
)
def test_no_pay_link_once_the_group_is_over_or_the_member_paid(status: int) -> None:
    over = member_view(_group(status), TOKENS["gus"], NOW)
    assert over["final"] is True
    assert over["you"]["payLink"] == ""
    assert member_view(_group(), TOKENS["zed"], NOW)["you"]["payLink"] == ""


def test_the_page_has_no_inline_code_and_writes_text_only() -> None:
    html = (STATIC / "group-page.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file
    assert "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    script = (STATIC / "group-page.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "script-src 'self'" in CSP
    assert "default-src 'none'" in CSP
    assert "'unsafe-inline'" not in CSP


def test_a_declined_member_is_offered_a_retry_not_the_closed_checkout() -> None:
    group = _group()
    group.members[1].status = group_pb2.MEMBER_STATUS_PAYMENT_FAILED
    view = member_view(group, TOKENS["gus"], NOW)
    assert view["you"]["status"] == "PAYMENT_FAILED"
    assert (view["you"]["payLink"], view["you"]["canRetry"]) == ("", True)
    # only their own: the others are not offered anything
    assert member_view(group, TOKENS["host"], NOW)["you"]["canRetry"] is False
    group.status = group_pb2.GROUP_STATUS_EXPIRED
    assert member_view(group, TOKENS["gus"], NOW)["you"]["canRetry"] is False


def test_a_closed_group_says_why_and_whether_a_lapsing_hold_ended_it_early() -> None:
    group = _group(group_pb2.GROUP_STATUS_EXPIRED)
    group.close_reason = "the hold of <b>zed</b>'s share lapses at 2030-01-01 13:00 UTC"
    early = member_view(group, TOKENS["gus"], NOW, ended_early=True)
    assert (early["closeReason"], early["endedEarly"]) == (group.close_reason, True)
    open_group = _group()
    open_group.close_reason = "not shown while open"
    view = member_view(open_group, TOKENS["gus"], NOW, ended_early=True)
    assert (view["closeReason"], view["endedEarly"]) == ("", False)
