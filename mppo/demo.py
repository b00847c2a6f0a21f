"""``mppo demo``: one group order end to end against a running system, printed as a timeline.

The host creates a group from a cart of the sandbox merchant's catalogue, adds three members,
they join, the host opens it, every member pays on their hosted link (the sandbox provider's
programmatic pay endpoint), and the demo waits for the order. It then prints the timeline:
every event of the group as JetStream stored it (an ordered consumer on every stream, kept
to this group's ids), every state change (``GET /group/{id}/history``), and the payments, the
sandbox ledger, the order and the notifications sent.

The pieces (:class:`GatewayClient`, :func:`run_checkout`, :class:`EventTap`) are what the load
benchmark in ``bench/`` drives as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import nats
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from mppo.platform.event_types import message_class
from mppo.platform.messaging import server_urls

logger = logging.getLogger(__name__)

__all__ = [
    "CheckoutResult",
    "DemoTargets",
    "EventTap",
    "GatewayClient",
    "SeenEvent",
    "StepTimer",
    "SystemNotRunningError",
    "demo",
    "run_checkout",
]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
DEFAULT_NATS = "nats://127.0.0.1:4222"
TEST_CARD = "4242424242424242"
TAP_SUBJECTS = ("group.>", "member.>", "payment.>", "order.>")

StepTimer = Callable[[str, float], None]
"""Called with a step name and its duration in seconds after every REST call."""


class SystemNotRunningError(RuntimeError):
    """The gateway (or another part of the system) does not answer."""


class CheckoutError(RuntimeError):
    """A step of the checkout answered with an unexpected status."""


@dataclass(frozen=True)
class DemoTargets:
    """Where the running system is: the gateway, NATS and the state dir holding the dev keys."""

    gateway_url: str
    nats_url: str
    state_dir: Path

    @classmethod
    def from_state_dir(
        cls, state_dir: Path, gateway_url: str | None = None, nats_url: str | None = None
    ) -> DemoTargets:
        """Addresses from ``<state dir>/devstack.json`` when a stack runs from there, else the
        ``mppo dev up`` defaults; explicit arguments win."""
        recorded: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads((state_dir / "devstack.json").read_text())
        services = recorded.get("services", {})
        gateway = services.get("gateway", {}).get("addr")
        return cls(
            gateway_url=gateway_url or (f"http://{gateway}" if gateway else DEFAULT_GATEWAY),
            nats_url=nats_url or recorded.get("endpoints", {}).get("nats") or DEFAULT_NATS,
            state_dir=state_dir,
        )


class GatewayClient:
    """REST calls through the gateway as a given user, each timed under a step name."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        gateway_url: str,
        state_dir: Path,
        timer: StepTimer | None = None,
    ) -> None:
        self._http = http
        # several gateway replicas (comma-separated URLs): calls take turns over them
        self._bases = [url.strip().rstrip("/") for url in gateway_url.split(",") if url.strip()]
        self._base = self._bases[0]
        self._turn = 0
        self._state_dir = state_dir
        self._timer = timer
        self._tokens: dict[str, str] = {}

    def _token(self, user: str) -> str:
        token = self._tokens.get(user)
        if token is None:
            from gateway.devkeys import mint_token

            token = mint_token(self._state_dir, user, ttl_seconds=3600)
            self._tokens[user] = token
        return token

    async def call(
        self, step: str, method: str, path: str, user: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``method path`` as ``user``; the JSON answer. Raises CheckoutError on a non-200."""
        headers = {"Authorization": f"Bearer {self._token(user)}"}
        if method != "GET":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        started = time.perf_counter()
        self._turn += 1
        base = self._bases[self._turn % len(self._bases)]
        async with self._http.request(method, base + path, json=body, headers=headers) as resp:
            text = await resp.text()
        if self._timer is not None:
            self._timer(step, time.perf_counter() - started)
        if resp.status != 200:
            raise CheckoutError(f"{step}: {method} {path} -> {resp.status} {text[:300]}")
        answer: dict[str, Any] = json.loads(text)
        return answer

    async def pay(self, payment_link: str) -> dict[str, Any]:
        """Pay on a hosted link with the test card (the sandbox's programmatic endpoint)."""
        started = time.perf_counter()
        async with self._http.post(
            payment_link.rstrip("/") + "/pay",
            data={"card_number": TEST_CARD, "action": "pay"},
            headers={"Accept": "application/json"},
        ) as resp:
            text = await resp.text()
        if self._timer is not None:
            self._timer("pay (sandbox)", time.perf_counter() - started)
        if resp.status != 200:
            raise CheckoutError(f"pay: {payment_link} -> {resp.status} {text[:300]}")
        answer: dict[str, Any] = json.loads(text)
        return answer

    async def check_running(self) -> None:
        """Raise SystemNotRunningError unless the gateway answers /healthz."""
        try:
            async with self._http.get(
                self._base + "/healthz", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status == 200:
                    return
                raise SystemNotRunningError(f"gateway {self._base} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SystemNotRunningError(f"no gateway at {self._base} ({exc})") from exc


@dataclass
class CheckoutResult:
    """One finished checkout: ids, the final group, and when the last payment returned."""

    group_id: str
    host: str
    group: dict[str, Any]
    last_payment_at: float = 0.0
    """Wall-clock time (time.time()) the last member's pay call returned."""
    pay_returned_at: dict[str, float] = field(default_factory=dict)
    """Wall-clock time each member's pay call returned, by member id."""


def _cart(skus: list[tuple[str, str, int]], quantity: int) -> list[dict[str, Any]]:
    return [
        {"lineId": f"l{i}", "sku": sku, "name": name, "quantity": quantity, "unitPriceMinor": price}
        for i, (sku, name, price) in enumerate(skus, start=1)
    ]


DEMO_CART: list[tuple[str, str, int]] = [
    ("PIZZA-MARGHERITA", "Margherita pizza", 1200),
    ("PIZZA-PEPPERONI", "Pepperoni pizza", 1450),
    ("SODA-CAN", "Soda (can)", 250),
]


async def run_checkout(
    client: GatewayClient,
    *,
    members: int = 3,
    tag: str | None = None,
    before_pay: Callable[[str], Awaitable[None]] | None = None,
) -> CheckoutResult:
    """Create, add ``members``, join, open and pay every share; return before the order.

    ``before_pay(group_id)`` runs once the group is open (e.g. to start waiting for events).
    """
    tag = tag or uuid.uuid4().hex[:8]
    host = f"host-{tag}"
    deadline = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    created = await client.call(
        "create group",
        "POST",
        "/group",
        host,
        {
            "merchantId": "sandbox-pizza",
            "currencyCode": "USD",
            "items": _cart(DEMO_CART, 2),
            "feesMinor": 300,
            "taxMinor": 410,
            "tipMinor": 500,
            "splitMode": "SPLIT_MODE_EQUAL",
            "fallbackPolicy": "FALLBACK_POLICY_CANCEL",
            "deadline": deadline,
            "host": {"displayName": "Host", "email": f"{host}@example.com", "userId": host},
        },
    )
    group_id = str(created["group"]["groupId"])
    added = await client.call(
        "add members",
        "POST",
        f"/group/{group_id}/members",
        host,
        {
            "members": [
                {"displayName": f"Member {i}", "email": f"m{i}-{tag}@example.com"}
                for i in range(1, members + 1)
            ]
        },
    )
    guests = [m for m in added["group"]["members"] if m.get("role") != "MEMBER_ROLE_HOST"]
    for i, guest in enumerate(guests, start=1):
        await client.call(
            "join",
            "POST",
            f"/group/{group_id}/join",
            f"member{i}-{tag}",
            {"inviteToken": guest["inviteToken"]},
        )
    opened = await client.call("open group", "POST", f"/group/{group_id}/open", host, {})
    if before_pay is not None:
        await before_pay(group_id)
    result = CheckoutResult(group_id=group_id, host=host, group=opened["group"])
    for member in opened["group"]["members"]:
        await client.pay(str(member["paymentLink"]))
        result.pay_returned_at[str(member["memberId"])] = time.time()
    result.last_payment_at = time.time()
    return result


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class SeenEvent:
    """An event as JetStream stored it."""

    subject: str
    group_id: str
    aggregate_id: str
    stored_at: float
    """JetStream's store time of the message (seconds since the epoch)."""
    occurred_at: str
    """``Mppo-Occurred-At``: when the producing transaction committed."""
    summary: str
    payment_id: str = ""


def _summary(subject: str, payload: Any) -> str:
    parts = []
    for name in ("member_id", "payment_id", "order_id", "status", "reason"):
        value = getattr(payload, name, "")
        if value and isinstance(value, str):
            parts.append(f"{name.removesuffix('_id')} {value[:8]}")
    return ", ".join(parts)


class EventTap:
    """Every event on the MPPO streams from now on, by group id, via ordered push consumers.

    ``wait(group_id, subject)`` resolves when that event of that group has been stored.
    """

    def __init__(self, nats_url: str, prefix: str = "") -> None:
        self._url = nats_url
        self._prefix = f"{prefix}." if prefix else ""
        self._nc: NATSClient | None = None
        self.events: dict[str, list[SeenEvent]] = defaultdict(list)
        self._waiters: dict[tuple[str, str], asyncio.Future[SeenEvent]] = {}

    async def start(self) -> None:
        self._nc = await nats.connect(
            server_urls(self._url), connect_timeout=3, max_reconnect_attempts=3
        )
        js = self._nc.jetstream()
        for subject in TAP_SUBJECTS:
            await js.subscribe(
                self._prefix + subject,
                cb=self._on_message,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
            )

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def _on_message(self, msg: Msg) -> None:
        subject = msg.subject.removeprefix(self._prefix)
        headers = msg.headers or {}
        try:
            payload = message_class(subject)()
            payload.ParseFromString(msg.data)
        except Exception:  # an event type this build doesn't know: keep what the headers say
            logger.debug("undecodable event %s", subject)
            payload = None
        group_id = str(getattr(payload, "group_id", "") or "")
        stored = msg.metadata.timestamp
        seen = SeenEvent(
            subject=subject,
            group_id=group_id,
            aggregate_id=headers.get("Mppo-Aggregate-Id", ""),
            stored_at=stored.timestamp() if stored else time.time(),
            occurred_at=headers.get("Mppo-Occurred-At", ""),
            summary=_summary(subject, payload) if payload is not None else "",
            payment_id=str(getattr(payload, "payment_id", "") or ""),
        )
        if not group_id:
            return
        self.events[group_id].append(seen)
        waiter = self._waiters.pop((group_id, subject), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(seen)

    def first(self, group_id: str, subject: str) -> SeenEvent | None:
        return next((e for e in self.events.get(group_id, []) if e.subject == subject), None)

    async def wait(self, group_id: str, subject: str, within: float) -> SeenEvent:
        """The first ``subject`` event of ``group_id``; TimeoutError after ``within`` s."""
        seen = self.first(group_id, subject)
        if seen is not None:
            return seen
        future = self._waiters.get((group_id, subject))
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[(group_id, subject)] = future
        return await asyncio.wait_for(asyncio.shield(future), within)

    def forget(self, group_id: str) -> None:
        self.events.pop(group_id, None)


# ---------------------------------------------------------------- the demo


def _clock(ts: float, start: float) -> str:
    wall = datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]
    return f"{wall}  +{(ts - start) * 1000:8.1f} ms"


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _money(money: dict[str, Any] | None) -> str:
    if not money:
        return "-"
    return f"{int(money.get('amountMinor', 0)) / 100:.2f} {money.get('currencyCode', '')}"


async def _write_timeline(
    out: TextIO,
    client: GatewayClient,
    http: aiohttp.ClientSession,
    result: CheckoutResult,
    tap: EventTap | None,
    started: float,
) -> None:
    gid, host = result.group_id, result.host
    group = (await client.call("get group", "GET", f"/group/{gid}", host))["group"]
    history = (await client.call("history", "GET", f"/group/{gid}/history", host))["changes"]
    payments = (await client.call("payments", "GET", f"/payments?groupId={gid}", host))["payments"]
    order = (await client.call("order", "GET", f"/order/by-group/{gid}", host)).get("order", {})
    notes = (await client.call("notes", "GET", f"/notifications?groupId={gid}", host)).get(
        "notifications", []
    )
    rows: list[tuple[float, str]] = []
    for change in history:
        rows.append(
            (
                _parse_time(change["changeTime"]),
                f"state   {change.get('fromStatus', '').removeprefix('GROUP_STATUS_'):<11} -> "
                f"{change['toStatus'].removeprefix('GROUP_STATUS_'):<10} "
                f"({change.get('reason', '')}; {change.get('actor', '')})",
            )
        )
    for event in tap.events.get(gid, []) if tap is not None else []:
        rows.append((event.stored_at, f"event   {event.subject:<28} {event.summary}"))
    for member_id, when in result.pay_returned_at.items():
        rows.append((when, f"client  member {member_id[:8]} paid on the hosted page"))
    sandbox = _sandbox_base(payments)
    ledger: dict[str, Any] = {}
    if sandbox:
        async with http.get(f"{sandbox}/_sandbox/ledger", params={"group_id": gid}) as resp:
            ledger = await resp.json() if resp.status == 200 else {}
    for entry in ledger.get("entries", []):
        rows.append(
            (
                float(entry.get("created", 0)),
                f"ledger  {entry.get('kind', ''):<8} {int(entry.get('amount', 0)) / 100:.2f} "
                f"{str(entry.get('currency', '')).upper()} {entry.get('payment_intent', '')}",
            )
        )
    rows.sort(key=lambda row: row[0])
    out.write(f"\nGroup {gid}: {group['status']} total {_money(group.get('total'))}\n")
    out.write("\nTimeline (event times are JetStream store times)\n")
    for ts, text in rows:
        out.write(f"  {_clock(ts, started)}  {text}\n")
    out.write("\nPayments\n")
    for p in payments:
        out.write(
            f"  {p['paymentId'][:8]} member {p['memberId'][:8]} {_money(p.get('amount'))} "
            f"{p.get('status', '')} captured {_money(p.get('amountCaptured'))}\n"
        )
    if ledger:
        out.write(
            f"\nSandbox ledger: totals {json.dumps(ledger.get('totals', {}))}"
            f" held {ledger.get('held')} kept {ledger.get('kept')}\n"
        )
    out.write("\nOrder\n")
    out.write(
        f"  {order.get('orderId', '-')} {order.get('status', '-')} "
        f"merchant order {order.get('merchantOrderId', '-')}\n"
    )
    out.write(f"\nNotifications ({len(notes)})\n")
    for note in notes:
        out.write(
            f"  {note.get('kind', '').removeprefix('NOTIFICATION_KIND_'):<18} "
            f"{note.get('channel', '').removeprefix('NOTIFICATION_CHANNEL_'):<8} "
            f"{note.get('status', '').removeprefix('NOTIFICATION_STATUS_')} "
            f"member {str(note.get('memberId', ''))[:8]}\n"
        )
    out.flush()


def _sandbox_base(payments: list[dict[str, Any]]) -> str:
    for p in payments:
        link = str(p.get("paymentLink", ""))
        if "/checkout/" in link:
            return link.split("/checkout/", 1)[0]
    return ""


async def demo(targets: DemoTargets, out: TextIO, *, wait_seconds: float = 60.0) -> int:
    """Run one group order and print its timeline; 0 when it ends CONFIRMED."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        client = GatewayClient(http, targets.gateway_url, targets.state_dir)
        try:
            await client.check_running()
        except SystemNotRunningError as exc:
            out.write(f"mppo demo: the system is not running: {exc}\n")
            out.write("start it with `make run` (or `mppo dev up`) and try again\n")
            return 2
        tap: EventTap | None = EventTap(targets.nats_url)
        try:
            assert tap is not None
            await tap.start()
        except Exception as exc:
            out.write(f"(no event stream: NATS at {targets.nats_url} unreachable: {exc})\n")
            tap = None
        started = time.time()
        out.write(f"MPPO demo against {targets.gateway_url}\n")
        try:
            result = await run_checkout(client)
            out.write(f"group {result.group_id}: opened, every member paid; waiting for order\n")
            status = await _wait_final(client, result, tap, wait_seconds)
            await _wait_final_notice(client, result, status, NOTICE_WAIT_SECONDS)
            await _write_timeline(out, client, http, result, tap, started)
        except CheckoutError as exc:
            out.write(f"mppo demo failed: {exc}\n")
            return 1
        finally:
            if tap is not None:
                await tap.stop()
    out.write(f"\nresult: {status} in {time.time() - started:.2f} s\n")
    return 0 if status == "GROUP_STATUS_CONFIRMED" else 1


NOTICE_WAIT_SECONDS = 10.0
_FINAL_NOTICE = {
    "GROUP_STATUS_CONFIRMED": "NOTIFICATION_KIND_GROUP_CONFIRMED",
    "GROUP_STATUS_EXPIRED": "NOTIFICATION_KIND_GROUP_EXPIRED",
    "GROUP_STATUS_CANCELLED": "NOTIFICATION_KIND_GROUP_CANCELLED",
}


async def _wait_final_notice(
    client: GatewayClient, result: CheckoutResult, status: str, within: float
) -> bool:
    """Wait until the notice of the group's end is recorded (it follows the group's event).

    The notification service hears of the end after the group has moved, so the timeline
    would otherwise race it. True when the notice was seen within ``within`` seconds.
    """
    kind = _FINAL_NOTICE.get(status)
    if kind is None:
        return False
    deadline = time.monotonic() + within
    path = f"/notifications?groupId={result.group_id}"
    while True:
        notes = (await client.call("notes", "GET", path, result.host)).get("notifications", [])
        if any(note.get("kind") == kind for note in notes):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


async def _wait_final(
    client: GatewayClient, result: CheckoutResult, tap: EventTap | None, within: float
) -> str:
    deadline = time.monotonic() + within
    final = {"GROUP_STATUS_CONFIRMED", "GROUP_STATUS_CANCELLED", "GROUP_STATUS_EXPIRED"}
    status = ""
    while time.monotonic() < deadline:
        group = await client.call("get group", "GET", f"/group/{result.group_id}", result.host)
        status = str(group["group"]["status"])
        if status in final:
            return status
        if tap is not None:
            with contextlib.suppress(TimeoutError):
                await tap.wait(result.group_id, "group.confirmed", 0.5)
        else:
            await asyncio.sleep(0.25)
    return status or "unknown"
