"""The whole system as ``mppo dev up`` runs it, for end-to-end tests, and a REST client for it.

:func:`start_stack` runs ``mppo dev up --detach`` with the processes of ``DEFAULT_SERVICES``
(same commands, same environment) on free ports in an isolated, ephemeral state directory,
and reads every address from ``<state>/devstack.json``; :meth:`Stack.stop` runs
``mppo dev down``. Nothing is reached by a fixed port.

:class:`Api` talks to the stack over real HTTP only: the REST gateway (JSON per the proto3
JSON mapping, bearer tokens minted with the dev key the gateway trusts), the sandbox
provider's hosted page and test endpoints, the sandbox merchant's control endpoints and the
SMTP sink's message list.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg

from gateway.devkeys import mint_token
from mppo.devstack.process import pid_alive
from mppo.devstack.services import DEFAULT_SERVICES, ServiceDef
from mppo.devstack.stack import isolated_up_args

BIN = Path(sys.executable).parent
T = TypeVar("T")
Json = dict[str, Any]

CARD_SUCCESS = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_CAPTURE_FAILS = "4000000000000341"

#: carts priced from the sandbox merchant's default catalogue (USD cents)
PIZZA = ("PIZZA-MARGHERITA", "Margherita pizza", 1200)
PEPPERONI = ("PIZZA-PEPPERONI", "Pepperoni pizza", 1450)
GARLIC = ("GARLIC-BREAD", "Garlic bread", 550)
SODA = ("SODA-CAN", "Soda (can)", 250)
TIRAMISU = ("TIRAMISU", "Tiramisu", 700)


def mppo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the ``mppo`` command with no inherited ``MPPO_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPPO_")}
    return subprocess.run(
        [str(BIN / "mppo"), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def services_json(
    services: Sequence[ServiceDef] = DEFAULT_SERVICES,
    env: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Json]:
    """``services`` as ``--services`` JSON: every port 0 (free), extra env per service name."""
    out: list[Json] = []
    for svc in services:
        item = {**asdict(svc), "port": 0}
        item["env"] = {**svc.env, **(env or {}).get(svc.name, {})}
        out.append(item)
    return out


@dataclass
class Stack:
    """A running ``mppo dev up`` stack: where everything is."""

    state_dir: Path
    state: Json
    pids: list[int] = field(default_factory=list)

    def addr(self, name: str) -> str:
        return str(self.state["services"][name]["addr"])

    def url(self, name: str) -> str:
        return f"http://{self.addr(name)}"

    @property
    def gateway(self) -> str:
        return self.url("gateway")

    @property
    def sandbox(self) -> str:
        return self.url("sandbox")

    @property
    def merchant(self) -> str:
        return self.url("merchant")

    @property
    def smtp_sink(self) -> str:
        return self.url("smtp-sink")

    def addrs(self, name: str) -> list[str]:
        """Every replica's address of service ``name`` (one unless started with replicas)."""
        return [str(a) for a in self.state["services"][name].get("addrs", [self.addr(name)])]

    def current(self) -> Json:
        """``devstack.json`` as it is now (pids change when the supervisor restarts one)."""
        state: Json = json.loads((self.state_dir / "devstack.json").read_text())
        return state

    def process(self, name: str) -> Json:
        """The current record of process ``name`` (``group-1``, ``nats-2``, ...)."""
        found: Json = next(p for p in self.current()["processes"] if p["name"] == name)
        return found

    def database_url(self, name: str) -> str:
        return str(self.state["services"][name]["database_url"])

    async def query(self, name: str, sql: str, *args: Any) -> list[Json]:
        """Rows of a read-only query on service ``name``'s database (as dicts)."""
        connection = await asyncpg.connect(self.database_url(name))
        try:
            return [dict(row) for row in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    def token(self, user: str, ttl_seconds: int = 3600) -> str:
        """A bearer token for ``user`` signed with the key the gateway trusts."""
        return mint_token(self.state_dir, user, ttl_seconds=ttl_seconds)

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of one process's log, for failure messages."""
        for proc in self.state.get("processes", []):
            if proc["name"] == name:
                text = Path(proc["log"]).read_text(errors="replace")
                return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> subprocess.CompletedProcess[str]:
        """``mppo dev down``."""
        return mppo("dev", "down", "--state-dir", str(self.state_dir), timeout=120)

    def leftovers(self) -> list[int]:
        """Processes of this stack still alive."""
        return [pid for pid in self.pids if pid_alive(pid)]


def start_stack(
    root: Path,
    env: Mapping[str, Mapping[str, str]] | None = None,
    *,
    services: Sequence[ServiceDef] = DEFAULT_SERVICES,
    replicas: int = 1,
    nats_cluster: int = 1,
    observability: bool = False,
) -> Stack:
    """``mppo dev up --detach`` of ``services`` (every default one) on free ports under
    ``root``, each scalable one ``replicas`` times, on ``nats_cluster`` nats-servers; with
    ``observability``, Prometheus scrapes every process (``endpoints.prometheus``)."""
    root.mkdir(parents=True, exist_ok=True)
    services_file = root / "services.json"
    services_file.write_text(json.dumps(services_json(services, env), indent=2))
    state_dir = root / "state"
    up = mppo(
        *isolated_up_args(
            state_dir,
            services_file,
            replicas=replicas,
            nats_cluster=nats_cluster,
            observability=observability,
        ),
        timeout=420,
    )
    if up.returncode != 0:
        mppo("dev", "down", "--state-dir", str(state_dir), timeout=120)
        raise RuntimeError(f"mppo dev up failed:\n{up.stdout}\n{up.stderr}")
    state = json.loads((state_dir / "devstack.json").read_text())
    pids = [int(p["pid"]) for p in state["processes"]]
    return Stack(state_dir=state_dir, state=state, pids=pids)


# ---------------------------------------------------------------- polling


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 30.0,
    every: float = 0.2,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``done(result)``; the last result, or AssertionError naming it."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if done(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within:.0f}s; last: {last!r}")
        await asyncio.sleep(every)


def rfc3339(seconds_from_now: float) -> str:
    """A proto3 JSON ``Timestamp`` this many seconds from now."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def minor(money: Json | None) -> int:
    """``Money`` JSON → its amount in minor units (int64 arrives as a string)."""
    return int((money or {}).get("amountMinor", 0))


# ---------------------------------------------------------------- HTTP client


@dataclass
class Reply:
    """One HTTP answer: status, JSON (or text) body and headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    def ok(self) -> Any:
        """The body, or AssertionError with the status and body."""
        assert 200 <= self.status < 300, f"HTTP {self.status}: {self.body}"
        return self.body


class Api:
    """Real HTTP against a :class:`Stack` (one aiohttp session)."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.http = http
        self._tokens: dict[str, str] = {}

    def auth(self, user: str) -> dict[str, str]:
        if user not in self._tokens:
            self._tokens[user] = self.stack.token(user)
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request; a 429 (rate limit) is waited out per ``Retry-After`` and repeated."""
        for _ in range(20):
            async with self.http.request(
                method, url, json=json_body, data=data, headers=headers, params=params
            ) as response:
                raw = await response.read()
                if response.status == 429:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                return Reply(response.status, body, dict(response.headers))
        raise AssertionError(f"{method} {url} stayed rate-limited")

    # ---- gateway ----------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        user: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """``method path`` on the gateway as ``user``."""
        return await self.request(
            method,
            self.stack.gateway + path,
            json_body=body,
            headers=self.auth(user),
            params=params,
        )

    async def group(self, group_id: str, user: str) -> Json:
        group: Json = (await self.call("GET", f"/group/{group_id}", user)).ok()["group"]
        return group

    async def history(self, group_id: str, user: str) -> list[Json]:
        reply = (await self.call("GET", f"/group/{group_id}/history", user)).ok()
        changes: list[Json] = reply.get("changes", [])
        return changes

    async def payments(self, group_id: str, user: str) -> list[Json]:
        reply = (await self.call("GET", "/payments", user, params={"group_id": group_id})).ok()
        payments: list[Json] = reply.get("payments", [])
        return payments

    async def order_of(self, group_id: str, user: str) -> Reply:
        return await self.call("GET", f"/order/by-group/{group_id}", user)

    async def notifications(self, group_id: str, user: str) -> list[Json]:
        reply = (await self.call("GET", "/notifications", user, params={"group_id": group_id})).ok()
        found: list[Json] = reply.get("notifications", [])
        return found

    async def wait_group(self, group_id: str, user: str, status: str, within: float = 40.0) -> Json:
        """Poll ``GET /group/{id}`` until its status is ``GROUP_STATUS_<status>``."""
        return await eventually(
            lambda: self.group(group_id, user),
            lambda g: g["status"] == f"GROUP_STATUS_{status}",
            within=within,
            what=f"group {group_id} {status}",
        )

    async def wait_order(self, group_id: str, user: str, status: str, within: float = 40) -> Json:
        """Poll the order of the group until its status is ``ORDER_STATUS_<status>``."""
        reply = await eventually(
            lambda: self.order_of(group_id, user),
            lambda r: r.status == 200 and r.body["order"]["status"] == f"ORDER_STATUS_{status}",
            within=within,
            what=f"order of {group_id} {status}",
        )
        order: Json = reply.body["order"]
        return order

    # ---- sandbox provider ------------------------------------------------------------

    async def pay(self, link: str, card: str = CARD_SUCCESS, action: str = "pay") -> Json:
        """Open the hosted page as a browser would and submit its form; JSON outcome."""
        page = await self.request("GET", link)
        assert page.status == 200, page.body
        reply = await self.request(
            "POST",
            link.rstrip("/") + "/pay",
            data={"card_number": card, "action": action},
            headers={"Accept": "application/json"},
        )
        outcome: Json = reply.body
        return outcome

    async def ledger(self, group_id: str) -> Json:
        reply = await self.request(
            "GET", self.stack.sandbox + "/_sandbox/ledger", params={"group_id": group_id}
        )
        ledger: Json = reply.ok()
        return ledger

    async def sandbox_events(self, payment_intent: str = "", type_: str = "") -> list[Json]:
        params = {k: v for k, v in (("payment_intent", payment_intent), ("type", type_)) if v}
        reply = await self.request("GET", self.stack.sandbox + "/_sandbox/events", params=params)
        events: list[Json] = reply.ok()["events"]
        return events

    async def sandbox_faults(self, **values: Any) -> Json:
        reply = await self.request(
            "POST", self.stack.sandbox + "/_sandbox/faults", json_body=values
        )
        faults: Json = reply.ok()
        return faults

    async def sandbox_release(self, order: str) -> int:
        reply = await self.request(
            "POST", self.stack.sandbox + "/_sandbox/webhooks/release", json_body={"order": order}
        )
        return int(reply.ok()["released"])

    # ---- sandbox merchant and SMTP sink ---------------------------------------------

    async def merchant_fault(self, **values: Any) -> Json:
        reply = await self.request(
            "POST", self.stack.merchant + "/_control/faults", json_body=values
        )
        fault: Json = reply.ok()
        return fault

    async def merchant_state(self) -> Json:
        state: Json = (await self.request("GET", self.stack.merchant + "/_control/state")).ok()
        return state

    async def mails(self, to: str = "") -> list[Json]:
        params = {"to": to} if to else None
        reply = await self.request("GET", self.stack.smtp_sink + "/messages", params=params)
        messages: list[Json] = reply.ok()["messages"]
        return messages


# ---------------------------------------------------------------- a group order


@dataclass
class Person:
    """A user of the product: their id (JWT subject), name and e-mail."""

    user: str
    name: str
    email: str

    @classmethod
    def new(cls, name: str) -> Person:
        tag = uuid.uuid4().hex[:8]
        return cls(f"{name.lower()}-{tag}", name, f"{name.lower()}-{tag}@example.test")

    def member_input(self) -> Json:
        return {"displayName": self.name, "email": self.email}


def cart(*lines: tuple[tuple[str, str, int], int]) -> list[Json]:
    """LineItem JSON for ``((sku, name, unit price), quantity)`` pairs."""
    return [
        {
            "lineId": f"l{i}",
            "sku": sku,
            "name": name,
            "quantity": quantity,
            "unitPriceMinor": str(price),
        }
        for i, ((sku, name, price), quantity) in enumerate(lines)
    ]


def create_body(
    host: Person,
    items: list[Json],
    *,
    deadline_in: float = 7200.0,
    policy: str = "CANCEL",
    tax_minor: int = 0,
    fees_minor: int = 0,
    tip_minor: int = 0,
) -> Json:
    """A ``POST /group`` body: equal split, USD, the host only."""
    return {
        "merchantId": "sandbox-merchant",
        "currencyCode": "USD",
        "items": items,
        "feesMinor": str(fees_minor),
        "taxMinor": str(tax_minor),
        "tipMinor": str(tip_minor),
        "splitMode": "SPLIT_MODE_EQUAL",
        "fallbackPolicy": f"FALLBACK_POLICY_{policy}",
        "deadline": rfc3339(deadline_in),
        "host": host.member_input(),
    }


@dataclass
class GroupOrder:
    """A group order driven through the gateway: its host, guests and ids."""

    api: Api
    host: Person
    guests: list[Person]
    group_id: str = ""
    member_ids: dict[str, str] = field(default_factory=dict)  # user -> member id

    @property
    def people(self) -> list[Person]:
        return [self.host, *self.guests]

    async def create(self, body: Json) -> Json:
        """``POST /group``, ``POST /group/{id}/members``, then each guest joins."""
        created = (await self.api.call("POST", "/group", self.host.user, body)).ok()["group"]
        self.group_id = created["groupId"]
        self.member_ids[self.host.user] = created["members"][0]["memberId"]
        added = (
            await self.api.call(
                "POST",
                f"/group/{self.group_id}/members",
                self.host.user,
                {"members": [g.member_input() for g in self.guests]},
            )
        ).ok()["group"]
        tokens = {m["email"]: m["inviteToken"] for m in added["members"]}
        for guest in self.guests:
            joined = (
                await self.api.call(
                    "POST",
                    f"/group/{self.group_id}/join",
                    guest.user,
                    {"inviteToken": tokens[guest.email]},
                )
            ).ok()
            self.member_ids[guest.user] = joined["memberId"]
        return await self.get()

    async def open(self) -> Json:
        reply = await self.api.call("POST", f"/group/{self.group_id}/open", self.host.user, {})
        group: Json = reply.ok()["group"]
        return group

    async def get(self, user: str = "") -> Json:
        return await self.api.group(self.group_id, user or self.host.user)

    def member(self, group: Json, person: Person) -> Json:
        """``person``'s entry in ``group``."""
        member_id = self.member_ids[person.user]
        found: Json = next(m for m in group["members"] if m["memberId"] == member_id)
        return found

    async def link_of(self, person: Person) -> str:
        """The member's payment link, as the member sees it."""
        link: str = self.member(await self.get(person.user), person)["paymentLink"]
        return link

    async def pay(self, people: Sequence[Person], card: str = CARD_SUCCESS) -> list[Json]:
        """Each of ``people`` pays on their own hosted link, at the same time; the outcomes."""
        links = [await self.link_of(p) for p in people]
        return list(await asyncio.gather(*(self.api.pay(link, card) for link in links)))

    async def wait(self, status: str, within: float = 40.0) -> Json:
        return await self.api.wait_group(self.group_id, self.host.user, status, within)

    async def wait_member(self, person: Person, status: str, within: float = 30.0) -> Json:
        """Poll until ``person``'s member status is ``MEMBER_STATUS_<status>``."""
        group = await eventually(
            self.get,
            lambda g: self.member(g, person)["status"] == f"MEMBER_STATUS_{status}",
            within=within,
            what=f"{person.name} {status}",
        )
        return self.member(group, person)

    async def statuses(self) -> list[tuple[str, str]]:
        """``(from, to)`` of every transition in ``GET /group/{id}/history``, short names."""
        changes = await self.api.history(self.group_id, self.host.user)
        return [
            (
                c.get("fromStatus", "GROUP_STATUS_UNSPECIFIED").removeprefix("GROUP_STATUS_"),
                c["toStatus"].removeprefix("GROUP_STATUS_"),
            )
            for c in changes
        ]

    async def payments(self) -> list[Json]:
        return await self.api.payments(self.group_id, self.host.user)

    async def ledger(self) -> Json:
        return await self.api.ledger(self.group_id)

    async def notifications(self) -> list[Json]:
        return await self.api.notifications(self.group_id, self.host.user)

    async def mails(self) -> list[Json]:
        """Messages the SMTP sink received about this group (any recipient)."""
        return [m for m in await self.api.mails() if self.group_id in m.get("body", "")]

    async def mails_to(self, person: Person) -> list[Json]:
        """Messages about this group sent to ``person``, oldest first."""
        return [m for m in await self.mails() if person.email in m["rcpt_to"]]
