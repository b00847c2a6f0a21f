"""Checkouts that ride out a dying process, and the money invariants they must keep.

:class:`Resilient` is a client as a careful integrator writes one: every mutating request
carries an ``Idempotency-Key``; a request that fails on the way (connection refused or reset,
a 5xx while a replica is gone) is sent again with the same key, to the next gateway replica.
Nothing else is retried: a 4xx is a real failure. :func:`checkout` drives a group of three
through it, :func:`assert_invariants` checks what a crash may never break.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.e2e import (
    PIZZA,
    SODA,
    Api,
    Json,
    Person,
    Stack,
    cart,
    create_body,
    eventually,
    minor,
)

ATTEMPTS = 60


class Resilient:
    """Requests to the gateway replicas, retried with the same Idempotency-Key."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.http = http
        self.gateways = [f"http://{addr}" for addr in stack.addrs("gateway")]
        self._tokens: dict[str, str] = {}
        self._turn = 0
        #: failed attempts that a retry then fixed, by what failed
        self.retried: Counter[str] = Counter()

    def _token(self, user: str) -> str:
        if user not in self._tokens:
            self._tokens[user] = self.stack.token(user)
        return self._tokens[user]

    async def call(self, method: str, path: str, user: str, body: Any = None) -> Json:
        headers = {"Authorization": f"Bearer {self._token(user)}"}
        if method != "GET":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        what = f"{method} {path.split('/')[1]}"
        self._turn += 1
        for attempt in range(ATTEMPTS):
            base = self.gateways[(self._turn + attempt) % len(self.gateways)]
            try:
                async with self.http.request(
                    method, base + path, json=body, headers=headers
                ) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.retried[f"{what}: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.25)
                continue
            if status == 429 or status >= 500:
                self.retried[f"{what}: HTTP {status}"] += 1
                await asyncio.sleep(0.25)
                continue
            reply: Json = json.loads(raw) if raw else {}
            assert 200 <= status < 300, f"{method} {path} (attempt {attempt + 1}): {status} {reply}"
            return reply
        raise AssertionError(f"{method} {path} still failing after {ATTEMPTS} attempts")


@dataclass
class Checkout:
    """One group of three, driven through :class:`Resilient`."""

    host: Person
    guests: list[Person]
    group_id: str = ""
    total: int = 0
    members: dict[str, str] = field(default_factory=dict)  # user -> member id

    @property
    def people(self) -> list[Person]:
        return [self.host, *self.guests]


async def checkout(client: Resilient, api: Api) -> Checkout:
    """Create, add two members, join, open, and everyone pays on their own link."""
    order = Checkout(Person.new("Host"), [Person.new("Ann"), Person.new("Ben")])
    body = create_body(order.host, cart((PIZZA, 1), (SODA, 2)))
    created = (await client.call("POST", "/group", order.host.user, body))["group"]
    order.group_id, order.total = created["groupId"], minor(created["total"])
    order.members[order.host.user] = created["members"][0]["memberId"]
    path = f"/group/{order.group_id}"
    added = await client.call(
        "POST",
        f"{path}/members",
        order.host.user,
        {"members": [g.member_input() for g in order.guests]},
    )
    tokens = {m["email"]: m["inviteToken"] for m in added["group"]["members"]}
    for guest in order.guests:
        joined = await client.call(
            "POST", f"{path}/join", guest.user, {"inviteToken": tokens[guest.email]}
        )
        order.members[guest.user] = joined["memberId"]
    await client.call("POST", f"{path}/open", order.host.user, {})
    for person in order.people:
        group = (await client.call("GET", path, person.user))["group"]
        mine = next(m for m in group["members"] if m["memberId"] == order.members[person.user])
        outcome = await api.pay(mine["paymentLink"])
        assert outcome.get("outcome") == "requires_capture", outcome
    return order


async def wait_settled(client: Resilient, order: Checkout, within: float = 150.0) -> str:
    """The group's final status (CONFIRMED, or how it ended otherwise)."""
    final = ("CONFIRMED", "CANCELLED", "EXPIRED", "FAILED")
    group = await eventually(
        lambda: client.call("GET", f"/group/{order.group_id}", order.host.user),
        lambda g: g["group"]["status"].removeprefix("GROUP_STATUS_") in final,
        within=within,
        every=0.5,
        what=f"group {order.group_id} settled",
    )
    return str(group["group"]["status"]).removeprefix("GROUP_STATUS_")


async def assert_invariants(stack: Stack, client: Resilient, api: Api, order: Checkout) -> str:
    """One group per create, its members once; a confirmed group has exactly one merchant
    order and the provider kept exactly the order's total (nothing held, nothing refunded);
    any other outcome keeps nothing. Returns the group's final status."""
    status = await wait_settled(client, order)
    groups = await stack.query(
        "group", "SELECT group_id FROM group_orders WHERE host_user_id = $1", order.host.user
    )
    assert [g["group_id"] for g in groups] == [order.group_id], "a retried create made two groups"
    members = await stack.query(
        "group", "SELECT count(*) AS n FROM group_members WHERE group_id = $1", order.group_id
    )
    assert members[0]["n"] == 3
    ledger = await eventually(
        lambda: api.ledger(order.group_id),
        lambda lg: lg["held"] == 0 and (lg["kept"] == order.total or status != "CONFIRMED"),
        within=60,
        what=f"ledger of {order.group_id} settled",
    )
    if status != "CONFIRMED":
        assert ledger["kept"] == 0, (status, ledger)
        return status
    reply = await client.call("GET", f"/order/by-group/{order.group_id}", order.host.user)
    placed = reply["order"]
    assert placed["status"] == "ORDER_STATUS_CONFIRMED"
    assert minor(placed["total"]) == order.total
    captured = sum(
        minor(s["amount"]) for s in placed["shares"] if s["status"] == "ORDER_SHARE_STATUS_CAPTURED"
    )
    assert captured == order.total, placed["shares"]
    assert ledger["kept"] == order.total, ledger
    assert ledger["totals"]["capture"] == order.total, ledger  # no share captured twice
    assert ledger["totals"]["refund"] == 0, ledger
    orders = await stack.query(
        "order", "SELECT order_id FROM orders WHERE group_id = $1", order.group_id
    )
    assert len(orders) == 1
    merchant = await api.merchant_state()
    at_merchant = [o for o in merchant["orders"] if o["reference"] == placed["orderId"]]
    assert len(at_merchant) == 1, at_merchant
    return status


async def run_checkouts(
    client: Resilient, api: Api, count: int, *, every: float, concurrency: int = 3
) -> list[Checkout]:
    """``count`` checkouts, one started every ``every`` seconds, at most ``concurrency`` at
    once; every one must complete."""
    limit = asyncio.Semaphore(concurrency)

    async def one(delay: float) -> Checkout:
        await asyncio.sleep(delay)
        async with limit:
            return await checkout(client, api)

    return list(await asyncio.gather(*(one(i * every) for i in range(count))))


async def kill_and_wait_back(stack: Stack, name: str, within: float = 90.0) -> int:
    """SIGKILL process ``name`` and wait until the supervisor has it serving again; the
    killed pid."""
    before = stack.process(name)
    pid = int(before["pid"])
    os.kill(pid, signal.SIGKILL)
    log = stack.state_dir / "logs" / "supervisor.log"
    deadline = time.monotonic() + within
    while True:
        now = stack.process(name)
        back = f"{name} is back (pid {now['pid']})" in log.read_text(errors="replace")
        if int(now["pid"]) != pid and now["state"] == "running" and back:
            return pid
        assert time.monotonic() < deadline, f"{name} did not come back: {now}"
        await asyncio.sleep(0.2)
