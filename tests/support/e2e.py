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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg

from gateway.devkeys import mint_token
from mppo.devstack.process import pid_alive
from mppo.devstack.services import DEFAULT_SERVICES, ServiceDef
from mppo.devstack.stack import isolated_up_args
from mppo.platform.money import from_decimal_string
from payment_svc.simulators.paypal import PayPalSimulator
from payment_svc.simulators.razorpay import RazorpaySimulator

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


def until_down(running: Stack, *, restarts_expected: bool = False) -> Iterator[Stack]:
    """A stack fixture's body (``yield from until_down(start_stack(...))``): the stack, then
    ``mppo dev down``, which must succeed and leave no process behind (restarted ones
    included); unless ``restarts_expected``, no process may have died meanwhile (the
    supervisor restarts one that does, so a crash would otherwise pass unnoticed)."""
    try:
        yield running
    finally:
        try:
            processes = running.current()["processes"]
        finally:
            down = running.stop()
    running.pids += [int(p["pid"]) for p in processes]
    restarted = {p["name"]: p["last_exit"] for p in processes if p["last_exit"] is not None}
    assert down.returncode == 0, down.stdout + down.stderr
    assert running.leftovers() == []
    if not restarts_expected:
        assert restarted == {}, f"processes died during the tests (exit codes): {restarted}"


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

    # ---- the local PayPal and Razorpay (payment_svc/simulators/paypal.py, razorpay.py) -

    async def pay_paypal(self, link: str) -> Json:
        """Open PayPal's approve page (``/checkoutnow?token=<order id>``) and approve."""
        page = await self.request("GET", link)
        assert page.status == 200, page.body
        url = urlsplit(link)
        order_id = parse_qs(url.query)["token"][0]
        reply = await self.request("POST", f"{url.scheme}://{url.netloc}/_fake/approve/{order_id}")
        approved: Json = reply.ok()
        return approved

    async def pay_razorpay(self, link: str, outcome: str = "captured") -> Json:
        """Open the Razorpay payment link (``/i/<id>``) and pay: ``captured`` (a payment
        link captures at once), ``authorized`` or ``failed``."""
        page = await self.request("GET", link)
        assert page.status == 200, page.body
        url = urlsplit(link)
        link_id = "plink_" + url.path.rsplit("/", 1)[1]
        reply = await self.request(
            "POST",
            f"{url.scheme}://{url.netloc}/_fake/pay/{link_id}",
            data={"outcome": outcome},
        )
        paid: Json = reply.ok()
        return paid

    async def pay_at(self, provider: str, link: str) -> str:
        """Pay ``link`` on ``provider``'s page as its payer would; the provider's word for it."""
        if provider == "paypal":
            return str((await self.pay_paypal(link))["status"])
        if provider == "razorpay":
            return str((await self.pay_razorpay(link))["status"])
        return str((await self.pay(link))["outcome"])

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
    """A user of the product: their id (JWT subject), name and e-mail; optionally the
    provider the host names for them (``provider``) or they name when joining
    (``joins_with``): ``sandbox``, ``paypal``, ``razorpay``, ``stripe``."""

    user: str
    name: str
    email: str
    provider: str = ""
    joins_with: str = ""

    @classmethod
    def new(cls, name: str, *, provider: str = "", joins_with: str = "") -> Person:
        tag = uuid.uuid4().hex[:8]
        return cls(
            f"{name.lower()}-{tag}",
            name,
            f"{name.lower()}-{tag}@example.test",
            provider=provider,
            joins_with=joins_with,
        )

    @property
    def pays_with(self) -> str:
        """The provider this person pays with (the sandbox: the dev stack's default)."""
        return self.joins_with or self.provider or "sandbox"

    def member_input(self) -> Json:
        found: Json = {"displayName": self.name, "email": self.email}
        if self.provider:
            found["provider"] = provider_enum(self.provider)
        return found


def provider_enum(name: str) -> str:
    """A provider name as its proto3 JSON enum value (``paypal`` → ``PROVIDER_PAYPAL``)."""
    return f"PROVIDER_{name.upper()}"


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
            join: Json = {"inviteToken": tokens[guest.email]}
            if guest.joins_with:
                join["provider"] = provider_enum(guest.joins_with)
            joined = (
                await self.api.call("POST", f"/group/{self.group_id}/join", guest.user, join)
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

    async def pay_each_at_own_provider(self, people: Sequence[Person]) -> list[str]:
        """Each of ``people`` pays on their own link at their own provider's page, at the
        same time; each provider's word for it."""
        links = [await self.link_of(p) for p in people]
        return list(
            await asyncio.gather(
                *(self.api.pay_at(p.pays_with, link) for p, link in zip(people, links, strict=True))
            )
        )

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


# ---------------------------------------------------------------- money, per provider

#: providers that hold money before capture (the rest capture at once: compensation refunds)
HOLDING_PROVIDERS = frozenset({"sandbox", "stripe", "paypal"})


@dataclass
class ProviderMoney:
    """What one provider's own books say about a group's payments (minor units): money held
    (authorized), captured, released without capture and refunded, and what is held now."""

    provider: str
    hold: int = 0
    capture: int = 0
    release: int = 0
    refund: int = 0
    held: int = 0

    @property
    def kept(self) -> int:
        """Captured and not refunded: the merchant's money."""
        return self.capture - self.refund


@dataclass
class ProviderFakes:
    """The local PayPal and Razorpay a stack's payment service talks to (in this process)."""

    paypal: PayPalSimulator
    razorpay: RazorpaySimulator

    def env(self) -> dict[str, dict[str, str]]:
        """Per-service environment (``start_stack(env=...)``) offering members the sandbox,
        PayPal and Razorpay, the latter two through their real adapters pointed at the fakes.
        The webhook destinations are set once the gateway's address is known
        (:meth:`deliver_to`)."""
        offered = {"MPPO_PAYMENT_PROVIDERS": "sandbox,paypal,razorpay"}
        return {
            "payment": {
                **offered,
                "MPPO_PAYPAL_CLIENT_ID": self.paypal.client_id,
                "MPPO_PAYPAL_CLIENT_SECRET": self.paypal.client_secret,
                "MPPO_PAYPAL_WEBHOOK_ID": self.paypal.webhook_id,
                "MPPO_PAYPAL_API_BASE": self.paypal.base_url,
                "MPPO_RAZORPAY_KEY_ID": self.razorpay.key_id,
                "MPPO_RAZORPAY_KEY_SECRET": self.razorpay.key_secret,
                "MPPO_RAZORPAY_WEBHOOK_SECRET": self.razorpay.webhook_secret,
                "MPPO_RAZORPAY_API_BASE": self.razorpay.base_url,
            },
            "group": offered,
        }

    def deliver_to(self, gateway: str) -> None:
        """Send each fake's signed webhooks to its route on the gateway."""
        self.paypal.deliver_to = f"{gateway}/payments/webhook/paypal"
        self.razorpay.deliver_to = f"{gateway}/payments/webhook/razorpay"


def provider_name(payment: Json) -> str:
    """A Payment JSON's provider as a name (``PROVIDER_PAYPAL`` → ``paypal``)."""
    return str(payment.get("provider", "PROVIDER_UNSPECIFIED")).removeprefix("PROVIDER_").lower()


async def sandbox_money(api: Api, group_id: str) -> ProviderMoney:
    """The sandbox's ledger of the group."""
    ledger = await api.ledger(group_id)
    totals = ledger["totals"]
    return ProviderMoney(
        "sandbox",
        hold=int(totals["hold"]),
        capture=int(totals["capture"]),
        release=int(totals["release"]),
        refund=int(totals["refund"]),
        held=int(ledger["held"]),
    )


def paypal_money(fake: PayPalSimulator, payment_ids: set[str]) -> ProviderMoney:
    """The fake PayPal's orders for our payments (``custom_id`` is our payment id)."""
    book = ProviderMoney("paypal")
    for order in fake.orders.values():
        unit = order["purchase_units"][0]
        if unit.get("custom_id") not in payment_ids:
            continue
        currency = str(unit["amount"]["currency_code"])
        moves = unit.get("payments") or {}

        def amount(resource: Json, currency: str = currency) -> int:
            return from_decimal_string(str(resource["amount"]["value"]), currency)

        for authorization in moves.get("authorizations") or []:
            if authorization["status"] == "DENIED":
                continue
            book.hold += amount(authorization)
            if authorization["status"] == "VOIDED":
                book.release += amount(authorization)
            elif authorization["status"] == "CREATED":
                book.held += amount(authorization)
        for capture in moves.get("captures") or []:
            if capture["status"] in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"):
                book.capture += amount(capture)
        for refund in moves.get("refunds") or []:
            if refund["status"] == "COMPLETED":
                book.refund += amount(refund)
    return book


def razorpay_money(fake: RazorpaySimulator, payment_ids: set[str]) -> ProviderMoney:
    """The fake Razorpay's payments on our links (``reference_id`` is our payment id)."""
    book = ProviderMoney("razorpay")
    for link in fake.links.values():
        if link["reference_id"] not in payment_ids:
            continue
        for entry in link["payments"] or []:
            payment = fake.payments[entry["payment_id"]]
            if payment["status"] == "failed":
                continue
            book.hold += int(payment["amount"])
            if payment["captured"]:
                book.capture += int(payment["amount"])
            elif payment["status"] == "authorized":
                book.held += int(payment["amount"])
            book.refund += int(payment["amount_refunded"])
    return book


async def money_problems(
    order: GroupOrder, fakes: ProviderFakes | None, confirmed: Json | None
) -> tuple[list[str], dict[str, ProviderMoney]]:
    """Reconcile the group's payments with every provider's own books: what is wrong (empty
    when nothing is), and each provider's books.

    - each provider's books agree with our records of the payments made there: it keeps what
      we recorded as captured and not refunded, and holds what we recorded as authorized;
    - with ``confirmed`` (the group's order, CONFIRMED): nothing is held anywhere, each
      provider keeps exactly the order's shares paid there, and the shares sum to the total;
    - without: nothing is kept and nothing held anywhere, and nothing was ever captured at a
      provider that can hold money (its holds were released instead).
    """
    payments = await order.payments()
    by_provider: dict[str, list[Json]] = {}
    for payment in payments:
        by_provider.setdefault(provider_name(payment), []).append(payment)
    books: dict[str, ProviderMoney] = {}
    problems: list[str] = []
    for name, theirs in sorted(by_provider.items()):
        ids = {str(p["paymentId"]) for p in theirs}
        if name == "sandbox":
            books[name] = await sandbox_money(order.api, order.group_id)
        elif name == "paypal" and fakes is not None:
            books[name] = paypal_money(fakes.paypal, ids)
        elif name == "razorpay" and fakes is not None:
            books[name] = razorpay_money(fakes.razorpay, ids)
        else:
            problems.append(f"{name}: no books to reconcile {sorted(ids)} with")
            continue
        book = books[name]
        kept = sum(minor(p.get("amountCaptured")) - minor(p.get("amountRefunded")) for p in theirs)
        held = sum(minor(p["amount"]) for p in theirs if p["status"] == "PAYMENT_STATUS_AUTHORIZED")
        if book.kept != kept:
            problems.append(f"{name} keeps {book.kept}, our payments say {kept}")
        if book.held != held:
            problems.append(f"{name} holds {book.held}, our payments say {held}")
        if book.held:
            problems.append(f"{name} still holds {book.held}")
    if confirmed is not None:
        shares = confirmed.get("shares", [])
        total = minor(confirmed["total"])
        if sum(minor(s["amount"]) for s in shares) != total:
            problems.append(f"the order's shares do not sum to its total {total}: {shares}")
        provider_of = {str(p["paymentId"]): provider_name(p) for p in payments}
        for name, book in books.items():
            owed = sum(
                minor(s["amount"]) for s in shares if provider_of.get(s["paymentId"]) == name
            )
            if book.kept != owed:
                problems.append(f"{name} keeps {book.kept}, the order's shares there are {owed}")
        if sum(b.kept for b in books.values()) != total:
            problems.append(f"the providers keep {[b.kept for b in books.values()]} != {total}")
    else:
        for name, book in books.items():
            if book.kept:
                problems.append(f"{name} keeps {book.kept} of a group without an order")
            if name in HOLDING_PROVIDERS and book.capture:
                problems.append(f"{name} captured {book.capture} instead of releasing the hold")
            if name in HOLDING_PROVIDERS and book.release != book.hold:
                problems.append(f"{name} released {book.release} of {book.hold} held")
    return problems, books


async def assert_money_reconciles(
    order: GroupOrder,
    fakes: ProviderFakes | None = None,
    *,
    confirmed: Json | None = None,
    within: float = 40.0,
) -> dict[str, ProviderMoney]:
    """Wait until :func:`money_problems` finds nothing (compensation and reconciliation run
    in the background); each provider's books, or AssertionError listing what is wrong."""
    found = await eventually(
        lambda: money_problems(order, fakes, confirmed),
        lambda result: not result[0],
        within=within,
        what="every provider's books reconciled with the payments",
    )
    return found[1]
