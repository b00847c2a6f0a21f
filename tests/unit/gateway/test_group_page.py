"""The members' group page: what one member may see (gateway/group_page.py), the page's
static files (no inline code, text written with textContent only)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.rpc import code_pb2

from gateway import group_page
from gateway.app import Gateway
from gateway.descriptors import Catalog
from gateway.group_page import (
    CSP,
    ENDINGS,
    MONEY_RETURNED,
    STATIC,
    NoSuchPageError,
    member_view,
)
from group_svc.domain import lifecycle
from group_svc.service_layer import handlers
from mppo.common.v1 import cart_pb2, money_pb2
from mppo.group.v1 import group_pb2, group_service_pb2
from mppo.platform.identity import Caller

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
        "returned": "",
    }
    assert (view["endCause"], view["endMessage"], view["endedEarly"]) == ("", "", False)
    assert (view["moneyReturned"], view["you"]["returned"]) == (False, "")
    assert view["members"] == [
        {"name": "<b>host</b>", "paid": False, "coveredByHost": False, "you": False},
        {"name": "<b>gus</b>", "paid": False, "coveredByHost": False, "you": True},
        {"name": "<b>zed</b>", "paid": True, "coveredByHost": False, "you": False},
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


def _after_fallback() -> group_pb2.GroupOrder:
    """HOST_PAYS_REMAINING applied: gus never paid, so his share moved to the host (his share 0,
    no longer required, COVERED_BY_HOST); zed had paid and stays required."""
    group = _group()
    host, gus, _zed = group.members
    gus.status = group_pb2.MEMBER_STATUS_COVERED_BY_HOST
    gus.share.amount_minor = 0
    gus.required = False
    gus.payment_link = ""
    host.share.amount_minor = 1000
    return group


def test_a_member_the_host_covers_stays_listed_as_covered() -> None:
    group = _after_fallback()
    for token in (TOKENS["host"], TOKENS["zed"]):  # the others see him, by name only
        members = member_view(group, token, NOW)["members"]
        assert [(m["name"], m["paid"], m["coveredByHost"]) for m in members] == [
            ("<b>host</b>", False, False),
            ("<b>gus</b>", False, True),
            ("<b>zed</b>", True, False),
        ]
    text = json.dumps(member_view(group, TOKENS["zed"], NOW))
    for secret in ("gus@example.test", TOKENS["gus"], "pay-gus", "user-gus"):
        assert secret not in text


def test_a_covered_member_sees_themselves_on_their_own_page() -> None:
    view = member_view(_after_fallback(), TOKENS["gus"], NOW)
    assert view["you"]["status"] == "COVERED_BY_HOST"
    assert (view["you"]["share"], view["you"]["payLink"], view["you"]["canRetry"]) == (
        "0.00 USD",
        "",
        False,
    )
    [own] = [m for m in view["members"] if m["you"]]
    assert own == {"name": "<b>gus</b>", "paid": False, "coveredByHost": True, "you": True}


def test_a_member_with_no_share_who_is_not_covered_is_not_listed() -> None:
    group = _group()
    group.members[1].required = False
    group.members[1].share.amount_minor = 0
    names = [m["name"] for m in member_view(group, TOKENS["zed"], NOW)["members"]]
    assert names == ["<b>host</b>", "<b>zed</b>"]


def test_the_page_shows_a_covered_member_as_covered_by_the_host() -> None:
    script = (STATIC / "group-page.js").read_text()
    assert 'm.coveredByHost) badge = element("span", "badge covered", "Covered by the host")' in (
        script
    )
    assert ".badge.covered" in (STATIC / "group-page.css").read_text()


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


# ---- why a group ended, as members read it --------------------------------------------------

#: what the group service recorded when the order failed because one member's capture was
#: declined: for the host and operators, never for the members' page
INTERNAL_REASON = (
    "order failed: 535418f9-0c4e-4a8e-9d51-2f7be0d1c0aa: PROVIDER_CARD_DECLINED: provider "
    "refused to capture: Your card was declined."
)
HOST = "user:host-user"
S = group_pb2


def _change(source: int, target: int, actor: str, reason: str = "") -> group_pb2.StatusChange:
    return group_pb2.StatusChange(
        from_status=source,  # type: ignore[arg-type]
        to_status=target,  # type: ignore[arg-type]
        actor=actor,
        reason=reason,
    )


CREATED = _change(S.GROUP_STATUS_UNSPECIFIED, S.GROUP_STATUS_DRAFT, HOST, "group created")
OPENED = _change(S.GROUP_STATUS_DRAFT, S.GROUP_STATUS_OPEN, HOST, "shares frozen")
HOLD_ROW = _change(
    S.GROUP_STATUS_OPEN,
    S.GROUP_STATUS_OPEN,
    "system:holds",
    "the hold of <b>zed</b>'s share lapses at 2030-01-01 13:00 UTC: the fallback applies now",
)


def _ended(
    status: int, close_reason: str, *changes: group_pb2.StatusChange
) -> tuple[group_pb2.GroupOrder, list[group_pb2.StatusChange]]:
    group = _group(status)
    group.close_reason = close_reason
    group.order_id = "order-4711" if status == S.GROUP_STATUS_CANCELLED else ""
    return group, list(changes)


CASES = {
    "ORDER_FAILED": _ended(
        S.GROUP_STATUS_CANCELLED,
        INTERNAL_REASON,
        CREATED,
        OPENED,
        _change(S.GROUP_STATUS_OPEN, S.GROUP_STATUS_PENDING, "system:payments"),
        _change(S.GROUP_STATUS_PENDING, S.GROUP_STATUS_CANCELLED, "system:orders", INTERNAL_REASON),
    ),
    "HOST_CANCELLED": _ended(
        S.GROUP_STATUS_CANCELLED,
        "cancelled by the host",
        CREATED,
        OPENED,
        _change(S.GROUP_STATUS_OPEN, S.GROUP_STATUS_CANCELLED, HOST, "cancelled by the host"),
    ),
    "DEADLINE_PASSED": _ended(
        S.GROUP_STATUS_EXPIRED,
        "deadline passed at 2030-01-01 12:00 UTC",
        CREATED,
        OPENED,
        _change(S.GROUP_STATUS_OPEN, S.GROUP_STATUS_EXPIRED, "system:scheduler", "deadline passed"),
    ),
    "NOT_OPENED": _ended(
        S.GROUP_STATUS_EXPIRED,
        "deadline passed at 2030-01-01 12:00 UTC",
        CREATED,
        _change(
            S.GROUP_STATUS_DRAFT, S.GROUP_STATUS_EXPIRED, "system:scheduler", "deadline passed"
        ),
    ),
    "HOST_ENDED": _ended(
        S.GROUP_STATUS_EXPIRED,
        "force-finalized by the host",
        CREATED,
        OPENED,
        _change(S.GROUP_STATUS_OPEN, S.GROUP_STATUS_EXPIRED, HOST, "force-finalized by the host"),
    ),
    "HOST_DID_NOT_PAY": _ended(
        S.GROUP_STATUS_EXPIRED,
        "grace period passed",
        CREATED,
        OPENED,
        _change(S.GROUP_STATUS_OPEN, S.GROUP_STATUS_EXPIRED, "system:scheduler", "grace period"),
    ),
    "HOLD_WOULD_LAPSE": _ended(
        S.GROUP_STATUS_EXPIRED,
        HOLD_ROW.reason.split(":")[0],
        CREATED,
        OPENED,
        HOLD_ROW,
        _change(S.GROUP_STATUS_OPEN, S.GROUP_STATUS_EXPIRED, "system:scheduler", "the hold of"),
    ),
}
CASES["HOST_DID_NOT_PAY"][0].grace_deadline.FromDatetime(NOW)


def _assert_nothing_internal(view: dict[str, object], group: group_pb2.GroupOrder) -> None:
    """No payment id, order id, reason code, internal close reason or another member's payment
    details anywhere in what the member gets."""
    text = json.dumps(view)
    for leak in (
        "535418f9",
        "PROVIDER_",
        "declined",
        "Your card",
        "pay-",
        "order-4711",
        "refused to capture",
        "lapses at",
        "system:",
        "user:",
    ):
        assert leak not in text, (leak, text)
    if group.close_reason and view["endCause"] != "HOST_CANCELLED":
        assert group.close_reason not in text


@pytest.mark.parametrize("cause", sorted(CASES))
def test_an_ended_group_tells_each_member_why_in_their_words(cause: str) -> None:
    group, changes = CASES[cause]
    for token in TOKENS.values():
        view = member_view(group, token, NOW, changes)
        assert view["endCause"] == cause
        assert (view["endTitle"], view["endMessage"]) == (
            ENDINGS[cause].title,
            ENDINGS[cause].message,
        )
        assert view["endedEarly"] is (cause == "HOLD_WOULD_LAPSE")
        assert view["hostReason"] == ""  # the host gave no reason of their own
        _assert_nothing_internal(view, group)


def test_the_order_failing_blames_no_member_and_no_card() -> None:
    group, changes = CASES["ORDER_FAILED"]
    view = member_view(group, TOKENS["gus"], NOW, changes)
    assert view["status"] == "CANCELLED"
    assert view["endTitle"] == "Cancelled: the order could not be placed"
    assert "card" not in view["endMessage"].lower()


def test_the_host_s_own_cancel_reason_is_shown_to_the_group_as_text() -> None:
    group, changes = CASES["HOST_CANCELLED"]
    group.close_reason = "<i>Sorry</i>, the restaurant closed early"
    view = member_view(group, TOKENS["zed"], NOW, changes)
    assert (view["endCause"], view["hostReason"]) == ("HOST_CANCELLED", group.close_reason)
    group.close_reason = "x" * 2000
    assert member_view(group, TOKENS["zed"], NOW, changes)["hostReason"] == "x" * 500
    # a close reason that is not the host's (the order failed) is never shown
    failed, failed_changes = CASES["ORDER_FAILED"]
    assert member_view(failed, TOKENS["zed"], NOW, failed_changes)["hostReason"] == ""


def test_a_group_whose_history_cannot_be_read_says_only_its_status() -> None:
    for cause in ("ORDER_FAILED", "DEADLINE_PASSED"):
        group, _ = CASES[cause]
        view = member_view(group, TOKENS["gus"], NOW)
        assert view["endCause"] == ("CANCELLED" if cause == "ORDER_FAILED" else "EXPIRED")
        assert view["endMessage"] == ENDINGS[view["endCause"]].message
        _assert_nothing_internal(view, group)


def test_an_open_or_confirmed_group_has_no_ending_and_keeps_its_money() -> None:
    for status in (S.GROUP_STATUS_OPEN, S.GROUP_STATUS_PENDING, S.GROUP_STATUS_CONFIRMED):
        group = _group(status)
        group.close_reason = "not shown"
        view = member_view(group, TOKENS["zed"], NOW, [HOLD_ROW])
        assert (view["endCause"], view["endTitle"], view["endedEarly"]) == ("", "", False)
        assert (view["moneyReturned"], view["moneyNote"], view["you"]["returned"]) == (
            False,
            "",
            "",
        )


@pytest.mark.parametrize("cause", sorted(CASES))
def test_an_ended_group_says_the_money_went_back(cause: str) -> None:
    group, changes = CASES[cause]
    payer = member_view(group, TOKENS["zed"], NOW, changes)
    assert (payer["moneyReturned"], payer["moneyNote"]) == (True, MONEY_RETURNED)
    assert payer["you"]["returned"] == "5.00 USD"  # what zed had paid
    assert member_view(group, TOKENS["gus"], NOW, changes)["you"]["returned"] == ""
    # the others still see only who had paid
    assert [m["paid"] for m in payer["members"]] == [False, False, True]


def test_the_page_and_the_group_service_agree_on_actors_and_the_default_reason() -> None:
    assert group_page.HOLD_ACTOR == lifecycle.HOLDS_ACTOR
    assert group_page.ORDERS_ACTOR == lifecycle.ORDERS_ACTOR
    assert group_page.DEFAULT_CANCEL_REASON == handlers.DEFAULT_CANCEL_REASON
    assert Caller(user_id="host-user").label == HOST


def test_the_script_shows_the_server_s_words_not_the_close_reason() -> None:
    script = (STATIC / "group-page.js").read_text()
    assert "closeReason" not in script
    for key in ("endTitle", "endMessage", "hostReason", "moneyNote", "Paid — returned"):
        assert key in script


# ---- the page's routes over HTTP (a stand-in gateway and group service) ---------------------


class _Upstreams:
    """Answers GetGroup and GetGroupHistory with one group and its history."""

    def __init__(self, group: group_pb2.GroupOrder, changes: list[group_pb2.StatusChange]):
        self.group = group
        self.changes = changes
        self.calls: list[str] = []

    async def call(self, binding: Any, message: Any, metadata: Any) -> Any:
        self.calls.append(binding.method.name)
        if binding.method.name == "GetGroup":
            if message.group_id != self.group.group_id:
                raise _rpc_error(grpc.StatusCode.NOT_FOUND)
            return group_service_pb2.GetGroupResponse(group=self.group)
        if binding.method.name == "GetGroupHistory":
            return group_service_pb2.GetGroupHistoryResponse(changes=self.changes)
        raise AssertionError(binding.method.name)


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "no", "")


@dataclass
class _Allowed:
    allowed: bool = True


class _Gateway:
    """What the page uses of gateway.app.Gateway: its catalog, error answers, limiter and
    upstreams (the error answers are the real ones)."""

    error = Gateway.error
    _status_response = Gateway._status_response

    def __init__(self, catalog: Catalog, upstreams: _Upstreams) -> None:
        self.catalog = catalog
        self.upstreams = upstreams
        self.config = SimpleNamespace(ip_limit=None)

    async def take(self, request: web.Request, bucket: str, limit: object) -> _Allowed:
        return _Allowed()


@web.middleware
async def _request_ids(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request["request_id"] = "r-1"
    request["traceparent"] = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    return await handler(request)


async def _client(mppo: Catalog, group: group_pb2.GroupOrder, changes: Any) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[_request_ids])
    group_page.add_routes(app, _Gateway(mppo, _Upstreams(group, changes)))

    async def catch_all(request: web.Request) -> web.Response:
        return web.json_response({"code": 5, "message": "no route"}, status=404)

    app.router.add_route("*", r"/{tail:[\s\S]*}", catch_all)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_the_state_of_a_failed_order_over_http_leaks_nothing(mppo: Catalog) -> None:
    group, changes = CASES["ORDER_FAILED"]
    client = await _client(mppo, group, changes)
    try:
        url = f"/g/{group.group_id}/state"
        reply = await client.get(url, headers={"X-Mppo-Invite": TOKENS["gus"]})
        assert reply.status == 200
        assert reply.headers["Content-Security-Policy"] == CSP
        view = await reply.json()
        assert (view["status"], view["endCause"]) == ("CANCELLED", "ORDER_FAILED")
        _assert_nothing_internal(view, group)
    finally:
        await client.close()


async def test_a_wrong_method_on_a_page_route_is_405_with_allow(mppo: Catalog) -> None:
    group, changes = CASES["DEADLINE_PASSED"]
    client = await _client(mppo, group, changes)
    base = f"/g/{group.group_id}"
    try:
        for method, path, allow in (
            ("POST", base, "GET, HEAD"),
            ("DELETE", base, "GET, HEAD"),
            ("GET", base + "/retry", "POST"),
            ("PUT", base + "/retry", "POST"),
            ("POST", base + "/state", "GET, HEAD"),
            ("POST", "/g/assets/group-page.js", "GET, HEAD"),
        ):
            reply = await client.request(method, path, headers={"X-Mppo-Invite": TOKENS["gus"]})
            assert reply.status == 405, (method, path)
            assert reply.headers["Allow"] == allow
            assert reply.headers["Content-Security-Policy"] == CSP
            body = await reply.json()
            assert body["code"] == code_pb2.UNIMPLEMENTED
            assert method in body["message"]
        # the methods each route serves still work
        assert (await client.get(base)).status == 200
        assert (await client.head(base)).status == 200
        state = await client.get(base + "/state", headers={"X-Mppo-Invite": TOKENS["gus"]})
        assert state.status == 200
    finally:
        await client.close()


async def test_a_bad_token_or_group_is_the_same_404(mppo: Catalog) -> None:
    group, changes = CASES["DEADLINE_PASSED"]
    client = await _client(mppo, group, changes)
    other = "00000000-0000-4000-8000-00000000beef"
    try:
        answers = []
        for group_id, token in (
            (group.group_id, "x" * 32),  # unknown token
            (group.group_id, "bad token!"),  # malformed token
            (other, TOKENS["gus"]),  # unknown group
            ("not-a-group", TOKENS["gus"]),  # malformed group id
        ):
            reply = await client.get(f"/g/{group_id}/state", headers={"X-Mppo-Invite": token})
            answers.append((reply.status, await reply.read()))
        assert {status for status, _ in answers} == {404}
        assert len({body for _, body in answers}) == 1
    finally:
        await client.close()
