"""The members' group page: what one member of a group order sees without logging in.

Routes (registered by :func:`add_routes` before the REST catch-all):

| route | answer |
| --- | --- |
| `GET /g/{group_id}` | the page: static HTML, the same for everyone; no data in it |
| `GET /g/assets/group-page.js`, `.css` | its script and style (`gateway/static/`) |
| `GET /g/{group_id}/state` | JSON: what the member holding the `X-Mppo-Invite` token may see |
| `POST /g/{group_id}/retry` | that member's declined payment retried: the state, new link |

The capability is the member's invite token, the one the group service issued for the member's
slot (192 random bits, `secrets.token_urlsafe(24)`). The invitation e-mail links to
`/g/<group_id>#<token>`: the token rides in the URL fragment, which the browser never sends
to a server (no access log, no `Referer`); the script hands it to `/state` in a header. The
gateway reads the group as itself (its certificate: the service view, tokens included), finds
the member whose token matches (constant-time compare against every member) and answers only
what that member may see:

- the cart (lines, fees, tax, tip, total), the deadline, the group's status;
- their own share, what they paid, their status and -- while the group is open and they owe
  -- their own payment link;
- every member's display name and whether they have paid, or whether the host covers their
  share (COVERED_BY_HOST after the fallback: listed, `coveredByHost`): no e-mails, phones,
  user ids, amounts, links or tokens of anyone else;
- once the group ended without an order (EXPIRED or CANCELLED), why, in words meant for
  members (`endCause`, `endTitle`, `endMessage`; `ENDINGS`), and that nobody is charged
  (`moneyReturned`: every hold released, every capture refunded; `you.returned`: what the
  member had paid, now returned). The cause comes from the group's structured state — its
  status, the actor of the history row that closed it (the services' own
  `system:<component>` actors, or the host's `user:<id>`) and the hold policy's OPEN→OPEN row
  (`endedEarly`) — never from the group's `close_reason`, which is written for the host and
  operators (it may name payments and provider codes of other members). Only the reason the
  host typed when cancelling is shown as it is (`hostReason`, text for the whole group).

A member whose payment was declined (PAYMENT_FAILED) is offered no Pay link (that checkout is
closed) but `you.canRetry` while the group is OPEN: the page's "Try again" posts to
`/g/{group_id}/retry` with the same header, and the gateway asks the group service, as
itself, to RetryPayment for the member the token names — only that member, never one named by
the request — and answers the fresh state with the new Pay link. The group service lets the
gateway (and no other service) retry for a member (group_svc RETRY_FOR_MEMBER); a payment that
is not a failed one is FAILED_PRECONDITION (HTTP 400, reason NOTHING_TO_RETRY), as for the REST
call.

A wrong group id, an unknown token and a malformed one get the same 404; a method a route does
not serve gets 405 with `Allow`, as on the REST routes. Every answer carries a
strict Content-Security-Policy (scripts, styles and fetches from this origin only; no inline
script or style, no frames, no forms, no base URI), `Referrer-Policy: no-referrer`, `nosniff`,
`X-Frame-Options: DENY` and `Cache-Control: no-store`; the script writes text with
`textContent` only, so names and cart lines are shown, never interpreted. The state endpoint
is rate limited per client IP like the REST API.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from mppo.group.v1 import group_pb2, group_service_pb2
from mppo.platform.money import format_minor

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
INVITE_HEADER = "X-Mppo-Invite"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
ASSETS = {
    "group-page.js": "text/javascript",
    "group-page.css": "text/css",
}
_GROUP_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}\Z")
_GET_GROUP = "GetGroup"
_GET_HISTORY = "GetGroupHistory"
_RETRY = "RetryPayment"
#: the actors of the group service's own history rows (group_svc/domain/lifecycle.py): the hold
#: policy bringing the deadline forward (an OPEN→OPEN row), and the order service's outcome
HOLD_ACTOR = "system:holds"
ORDERS_ACTOR = "system:orders"
#: the close reason of a host's cancel without a reason of their own (group_svc handlers)
DEFAULT_CANCEL_REASON = "cancelled by the host"
#: the most of the host's cancel reason the page shows
MAX_HOST_REASON = 500
#: the most history pages read to tell why a group ended (a group has a handful of rows)
MAX_HISTORY_PAGES = 5

GROUP_STATUS = {
    group_pb2.GROUP_STATUS_DRAFT: "DRAFT",
    group_pb2.GROUP_STATUS_OPEN: "OPEN",
    group_pb2.GROUP_STATUS_PENDING: "PENDING",
    group_pb2.GROUP_STATUS_CONFIRMED: "CONFIRMED",
    group_pb2.GROUP_STATUS_EXPIRED: "EXPIRED",
    group_pb2.GROUP_STATUS_CANCELLED: "CANCELLED",
}
MEMBER_STATUS = {
    group_pb2.MEMBER_STATUS_INVITED: "INVITED",
    group_pb2.MEMBER_STATUS_JOINED: "JOINED",
    group_pb2.MEMBER_STATUS_AWAITING_PAYMENT: "AWAITING_PAYMENT",
    group_pb2.MEMBER_STATUS_PAID: "PAID",
    group_pb2.MEMBER_STATUS_PAYMENT_FAILED: "PAYMENT_FAILED",
    group_pb2.MEMBER_STATUS_COVERED_BY_HOST: "COVERED_BY_HOST",
}
#: the group's states after which nothing changes any more (the page stops polling)
FINAL = frozenset({"CONFIRMED", "EXPIRED", "CANCELLED"})
#: member states in which the member still owes their share
OWES = frozenset({"AWAITING_PAYMENT", "PAYMENT_FAILED"})
#: group states whose close reason the page shows
CLOSED = frozenset({"EXPIRED", "CANCELLED"})


@dataclass(frozen=True)
class Ending:
    """How the page tells members why their group ended without an order."""

    title: str  # the status line
    message: str  # the explanation under it


#: every way a group ends without an order, as members read it: no ids, codes, or anyone's
#: payment details (the cause is the group's, not a member's)
ENDINGS = {
    "ORDER_FAILED": Ending(
        "Cancelled: the order could not be placed",
        "The order could not be completed with the merchant, so the group order was cancelled.",
    ),
    "HOST_CANCELLED": Ending(
        "Cancelled by the host",
        "The host cancelled the group order.",
    ),
    "CANCELLED": Ending("Cancelled", "The group order was cancelled."),
    "DEADLINE_PASSED": Ending(
        "Expired: the deadline passed before everyone paid",
        "The deadline passed before every share was paid, so the order was not placed.",
    ),
    "NOT_OPENED": Ending(
        "Expired: the group was never opened for payment",
        "The deadline passed before the host opened the group for payment.",
    ),
    "HOST_ENDED": Ending(
        "Ended by the host before everyone paid",
        "The host ended the group before every share was paid, so the order was not placed.",
    ),
    "HOST_DID_NOT_PAY": Ending(
        "Expired: the rest was not paid in time",
        "The host took over the unpaid shares but did not pay them in time, so the order was "
        "not placed.",
    ),
    "HOLD_WOULD_LAPSE": Ending(
        "Ended early: a card hold would have lapsed before the order could be placed",
        "A payment can only be held on a card for a limited time. The group could not be "
        "completed before one would have lapsed, so it ended before its deadline.",
    ),
    "EXPIRED": Ending("Expired", "The group ended before every share was paid."),
}
#: what happened to the money of a group that ended without an order
MONEY_RETURNED = (
    "Nobody is charged for this order: every hold on a card is released and any payment "
    "already taken is refunded."
)


def end_cause(group: group_pb2.GroupOrder, changes: Iterable[group_pb2.StatusChange]) -> str:
    """Why `group` ended without an order (a key of ENDINGS; "" while it has not), from its
    status and its history `changes` (empty when the history could not be read): who made the
    closing move, from which state, and whether the hold policy brought the deadline forward.
    Never from the free-text close reason."""
    status = GROUP_STATUS.get(group.status)
    if status not in CLOSED:
        return ""
    rows = list(changes)
    closing = next((c for c in reversed(rows) if c.to_status == group.status), None)
    if closing is None:  # the history could not be read: the status alone
        return "EXPIRED" if status == "EXPIRED" else "CANCELLED"
    by_host = closing.actor == f"user:{group.host_user_id}"
    if status == "CANCELLED":
        if closing.actor == ORDERS_ACTOR:
            return "ORDER_FAILED"
        return "HOST_CANCELLED" if by_host else "CANCELLED"
    if closing.from_status == group_pb2.GROUP_STATUS_DRAFT:
        return "NOT_OPENED"
    if by_host:
        return "HOST_ENDED"
    if any(
        c.actor == HOLD_ACTOR
        and c.from_status == group_pb2.GROUP_STATUS_OPEN
        and c.to_status == group_pb2.GROUP_STATUS_OPEN
        for c in rows
    ):
        return "HOLD_WOULD_LAPSE"
    if group.HasField("grace_deadline"):
        return "HOST_DID_NOT_PAY"
    return "DEADLINE_PASSED"


def host_reason(group: group_pb2.GroupOrder, cause: str) -> str:
    """The reason the host typed when cancelling (text for the whole group), or ""."""
    if cause != "HOST_CANCELLED":
        return ""
    reason = group.close_reason.strip()
    if reason == DEFAULT_CANCEL_REASON:
        return ""
    return reason[:MAX_HOST_REASON]


class NoSuchPageError(Exception):
    """The group or the member the token names does not exist (one answer for every case)."""


def _money(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency)


def _time(ts: Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _http_link(link: str) -> str:
    return link if link.startswith(("https://", "http://")) else ""


def member_of(group: group_pb2.GroupOrder, invite_token: str) -> group_pb2.Member:
    """The member holding `invite_token`; NoSuchPageError when none does. Compares against
    every member (no early exit), each compare in constant time."""
    you: group_pb2.Member | None = None
    for member in group.members:
        if member.invite_token and secrets.compare_digest(
            member.invite_token.encode(), invite_token.encode()
        ):
            you = member
    if you is None:
        raise NoSuchPageError
    return you


def member_view(
    group: group_pb2.GroupOrder,
    invite_token: str,
    now: datetime,
    changes: Iterable[group_pb2.StatusChange] = (),
) -> dict[str, Any]:
    """What the member holding `invite_token` may see of `group`; NoSuchPageError when no
    member holds it. `changes`: the group's history, read by the caller once the group has
    ended (it tells why; `end_cause`)."""
    you = member_of(group, invite_token)
    currency = group.total.currency_code
    status = GROUP_STATUS.get(group.status, "UNKNOWN")
    own_status = MEMBER_STATUS.get(you.status, "UNKNOWN")
    owes = you.amount_paid.amount_minor < you.share.amount_minor
    # a declined payment's checkout is closed: no Pay link then, "Try again" instead
    payable = status == "OPEN" and own_status == "AWAITING_PAYMENT" and owes
    retry = status == "OPEN" and own_status == "PAYMENT_FAILED" and owes
    cause = end_cause(group, changes)
    ending = ENDINGS.get(cause)
    returned = status in CLOSED
    return {
        "status": status,
        "final": status in FINAL,
        "deadline": _time(group.deadline),
        "graceDeadline": _time(group.grace_deadline),
        "endCause": cause,
        "endTitle": ending.title if ending else "",
        "endMessage": ending.message if ending else "",
        "hostReason": host_reason(group, cause),
        "endedEarly": cause == "HOLD_WOULD_LAPSE",
        "moneyReturned": returned,
        "moneyNote": MONEY_RETURNED if returned else "",
        "serverTime": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "items": [
            {
                "name": line.name,
                "quantity": line.quantity,
                "amount": _money(line.quantity * line.unit_price_minor, currency),
            }
            for line in group.items
        ],
        "extras": [
            {"name": name, "amount": _money(value, currency)}
            for name, value in (
                ("Fees", group.fees_minor),
                ("Tax", group.tax_minor),
                ("Tip", group.tip_minor),
            )
            if value
        ],
        "total": _money(group.total.amount_minor, currency),
        "you": {
            "name": you.display_name,
            "host": you.role == group_pb2.MEMBER_ROLE_HOST,
            "status": own_status,
            "share": _money(you.share.amount_minor, currency),
            "paid": _money(you.amount_paid.amount_minor, currency),
            "payLink": _http_link(you.payment_link) if payable else "",
            "canRetry": retry,
            # what they had paid, given back (the hold released or the capture refunded)
            "returned": (
                _money(you.amount_paid.amount_minor, currency)
                if returned and you.amount_paid.amount_minor > 0
                else ""
            ),
        },
        # every member who owes or owed a share: the required ones, and those the host's
        # fallback covers (share 0 since, no longer required, still in the group)
        "members": [
            {
                "name": m.display_name,
                "paid": m.status == group_pb2.MEMBER_STATUS_PAID,
                "coveredByHost": m.status == group_pb2.MEMBER_STATUS_COVERED_BY_HOST,
                "you": m.member_id == you.member_id,
            }
            for m in group.members
            if m.required or m.status == group_pb2.MEMBER_STATUS_COVERED_BY_HOST
        ],
    }


class GroupPage:
    """The page's handlers, over the gateway's upstreams, limiter and error answers."""

    def __init__(self, gateway: Any) -> None:
        # gateway.app.Gateway (not imported: app.py imports this module)
        self._gateway = gateway
        bindings = {
            b.method.name: b
            for b in gateway.catalog.bindings
            if b.service == "mppo.group.v1.GroupService"
        }
        self._binding = bindings[_GET_GROUP]
        self._history = bindings[_GET_HISTORY]
        self._retry = bindings[_RETRY]

    @staticmethod
    def _secure(response: web.StreamResponse) -> web.StreamResponse:
        response.headers.update(SECURITY_HEADERS)
        return response

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The HTML shell (the same bytes for every group and member)."""
        if not _GROUP_ID.match(request.match_info["group_id"]):
            return self._secure(self._gateway.error(code_pb2.NOT_FOUND, "no such page"))
        return self._secure(
            web.Response(body=(STATIC / "group-page.html").read_bytes(), content_type="text/html")
        )

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """The page's script or style."""
        name = request.match_info["name"]
        kind = ASSETS.get(name)
        if kind is None:
            return self._secure(self._gateway.error(code_pb2.NOT_FOUND, "no such asset"))
        response = web.Response(body=(STATIC / name).read_bytes(), content_type=kind)
        self._secure(response)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @staticmethod
    def _metadata(request: web.Request) -> list[tuple[str, str]]:
        """The gateway calls the group service as itself (its certificate), for the member
        the invite token names."""
        return [
            ("x-request-id", request["request_id"]),
            ("traceparent", request["traceparent"]),
            ("x-mppo-service", "gateway"),
        ]

    async def _admit(self, request: web.Request) -> tuple[str, str] | web.StreamResponse:
        """The rate limit, then the group id and invite token of a well-formed request (or
        the answer to give instead)."""
        gateway = self._gateway
        decision = await gateway.take(request, "ip", gateway.config.ip_limit)
        if not decision.allowed:
            return self._secure(gateway._refused(decision))
        group_id = request.match_info["group_id"]
        token = request.headers.get(INVITE_HEADER, "")
        if not _GROUP_ID.match(group_id) or not _TOKEN.match(token):
            return self._not_found()
        return group_id, token

    def _unavailable(self, method: str, exc: grpc.aio.AioRpcError) -> web.StreamResponse:
        logger.warning("group page: %s %s", method, exc.code().name)
        return self._secure(
            self._gateway.error(
                code_pb2.UNAVAILABLE,
                "the group service is unavailable",
                headers={"Retry-After": "1"},
                http=503,
            )
        )

    async def _group(self, request: web.Request, group_id: str) -> group_pb2.GroupOrder:
        """The group as the gateway sees it (raises the service's AioRpcError)."""
        message = group_service_pb2.GetGroupRequest(group_id=group_id)
        reply = await self._gateway.upstreams.call(self._binding, message, self._metadata(request))
        return group_service_pb2.GetGroupResponse.FromString(reply.SerializeToString()).group

    async def _changes(
        self, request: web.Request, group: group_pb2.GroupOrder
    ) -> list[group_pb2.StatusChange]:
        """The history of a group that ended without an order (it tells why: `end_cause`);
        nothing for any other group, nor when it cannot be read now (the page then says less)."""
        if GROUP_STATUS.get(group.status) not in CLOSED:
            return []
        changes: list[group_pb2.StatusChange] = []
        token = ""
        for _ in range(MAX_HISTORY_PAGES):
            message = group_service_pb2.GetGroupHistoryRequest(
                group_id=group.group_id, page_token=token
            )
            try:
                reply = await self._gateway.upstreams.call(
                    self._history, message, self._metadata(request)
                )
            except grpc.aio.AioRpcError as exc:
                logger.warning("group page: GetGroupHistory %s", exc.code().name)
                return []
            page = group_service_pb2.GetGroupHistoryResponse.FromString(reply.SerializeToString())
            changes.extend(page.changes)
            token = page.next_page_token
            if not token:
                return changes
        logger.warning("group page: the history is longer than %d pages", MAX_HISTORY_PAGES)
        return []

    async def _view(
        self, request: web.Request, group: group_pb2.GroupOrder, token: str
    ) -> web.StreamResponse:
        try:
            member_of(group, token)
        except NoSuchPageError:
            return self._not_found()
        changes = await self._changes(request, group)
        return self._secure(
            web.json_response(member_view(group, token, datetime.now(UTC), changes))
        )

    async def _admitted_group(
        self, request: web.Request
    ) -> tuple[group_pb2.GroupOrder, str] | web.StreamResponse:
        """The group and invite token of an admitted request, or the answer refusing it (404
        for a group or token that does not exist, 503 when the group service cannot say)."""
        admitted = await self._admit(request)
        if not isinstance(admitted, tuple):
            return admitted
        group_id, token = admitted
        try:
            group = await self._group(request, group_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return self._not_found()
            return self._unavailable("GetGroup", exc)
        return group, token

    async def state(self, request: web.Request) -> web.StreamResponse:
        """What the member holding the invite token may see, as JSON."""
        found = await self._admitted_group(request)
        if not isinstance(found, tuple):
            return found
        group, token = found
        return await self._view(request, group, token)

    async def retry(self, request: web.Request) -> web.StreamResponse:
        """A fresh payment attempt for the member holding the invite token, whose payment was
        declined: RetryPayment for that member (never another), then the state with the new
        link. FAILED_PRECONDITION (400) when there is nothing to retry (the group service's
        refusal)."""
        found = await self._admitted_group(request)
        if not isinstance(found, tuple):
            return found
        group, token = found
        group_id = group.group_id
        try:
            you = member_of(group, token)
        except NoSuchPageError:
            return self._not_found()
        message = group_service_pb2.RetryPaymentRequest(group_id=group_id, member_id=you.member_id)
        try:
            reply = await self._gateway.upstreams.call(
                self._retry, message, self._metadata(request)
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return self._not_found()
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                return self._secure(
                    self._gateway.error(
                        code_pb2.FAILED_PRECONDITION,
                        "there is no declined payment to try again",
                        reason="NOTHING_TO_RETRY",
                    )
                )
            if code == grpc.StatusCode.PERMISSION_DENIED:
                logger.error("group page: the group service refused the gateway's retry")
                return self._secure(
                    self._gateway.error(code_pb2.INTERNAL, "the payment cannot be retried here")
                )
            return self._unavailable("RetryPayment", exc)
        retried = group_service_pb2.RetryPaymentResponse.FromString(reply.SerializeToString())
        return await self._view(request, retried.group, token)

    def _not_found(self) -> web.StreamResponse:
        return self._secure(
            self._gateway.error(code_pb2.NOT_FOUND, "no such group page (the link is not valid)")
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _methods(gateway: Any, handlers: dict[str, Handler]) -> Handler:
    """One route's handler: each method it serves to its handler (GET serves HEAD too); any
    other method 405 with `Allow`, as the gateway answers a REST route's wrong method."""
    served = dict(handlers)
    if "GET" in served:
        served.setdefault("HEAD", served["GET"])
    allow = ", ".join(sorted(served))

    async def route(request: web.Request) -> web.StreamResponse:
        handler = served.get(request.method)
        if handler is not None:
            return await handler(request)
        return GroupPage._secure(
            gateway.error(
                code_pb2.UNIMPLEMENTED,
                f"method {request.method} not allowed on {request.path}",
                headers={"Allow": allow},
                http=405,
            )
        )

    return route


#: path → the methods it serves (GET serves HEAD too) → the GroupPage handler's name; Envoy's
#: config must let exactly these through without a JWT (tests/unit/test_deploy_config.py)
ROUTES: dict[str, dict[str, str]] = {
    "/g/assets/{name}": {"GET": "asset"},
    "/g/{group_id}": {"GET": "page"},
    "/g/{group_id}/state": {"GET": "state"},
    "/g/{group_id}/retry": {"POST": "retry"},
}


def add_routes(app: web.Application, gateway: Any) -> None:
    """The page's routes (`ROUTES`), every method of each (a method a route does not serve
    gets 405); call before the REST catch-all is added."""
    page = GroupPage(gateway)
    for path, served in ROUTES.items():
        handlers: dict[str, Handler] = {
            method: getattr(page, name) for method, name in served.items()
        }
        app.router.add_route("*", path, _methods(gateway, handlers))
