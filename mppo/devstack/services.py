"""The processes ``mppo dev up`` runs on top of the infrastructure: one line per service."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from mppo.devstack.probes import grpc_health_probe, http_get_probe
from mppo.devstack.process import Probe

__all__ = [
    "DEFAULT_SERVICES",
    "ENV_SERVICES",
    "GROUP_SCHEDULER",
    "PYTHON",
    "ServiceDef",
    "check_services",
    "load_services",
    "with_worker_role",
]

ENV_SERVICES = "MPPO_DEV_SERVICES"
"""``package.module:ATTRIBUTE`` (a sequence of :class:`ServiceDef`) or a JSON file path."""

PYTHON = "{python}"
"""Placeholder in a command for the interpreter running the supervisor."""

ReadinessKind = Literal["grpc", "http", "none"]


@dataclass(frozen=True)
class ServiceDef:
    """A service process.

    It listens on ``127.0.0.1:<port>`` (0 picks a free port), announced to every service as
    ``MPPO_<NAME>_ADDR``. With ``database`` set, ``dev up`` creates that database and passes
    ``MPPO_<NAME>_DATABASE_URL`` (or ``database_var``, for a role sharing another service's
    database). Readiness is the gRPC health check (``grpc``), an HTTP GET of ``health_path``
    answering 200 (``http``), or just "still running" (``none``).

    Replicas: ``replicas`` copies run (0: as many as ``mppo dev up --replicas N`` asks for when
    the service is ``scalable``, else one). Replica ``i`` of ``group`` is the process
    ``group-<i>``; the first listens on ``port`` (the others on free ports) and each is given
    its own address in ``MPPO_<NAME>_ADDR``, while every other process gets the replicas'
    addresses there, comma-separated (gRPC peers balance round robin over them; an HTTP
    service is announced by its first replica's address).
    """

    name: str
    command: tuple[str, ...]
    port: int
    readiness: ReadinessKind = "grpc"
    database: str | None = None
    health_path: str = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)
    replicas: int = 0
    scalable: bool = True
    database_var: str = ""

    @classmethod
    def grpc(cls, name: str, module: str, port: int, *, database: str | None = None) -> ServiceDef:
        return cls(name, (PYTHON, "-m", module), port, "grpc", database)

    @classmethod
    def http(
        cls,
        name: str,
        module: str,
        port: int,
        *,
        health_path: str = "/healthz",
        scalable: bool = False,
    ) -> ServiceDef:
        return cls(
            name, (PYTHON, "-m", module), port, "http", health_path=health_path, scalable=scalable
        )

    @property
    def env_prefix(self) -> str:
        return f"MPPO_{self.name.upper().replace('-', '_')}"

    @property
    def addr_env(self) -> str:
        return f"{self.env_prefix}_ADDR"

    @property
    def database_env(self) -> str:
        return self.database_var or f"{self.env_prefix}_DATABASE_URL"

    def replica_count(self, default: int) -> int:
        """How many copies run when ``mppo dev up --replicas`` says ``default``."""
        if self.replicas > 0:
            return self.replicas
        return default if self.scalable else 1

    def process_names(self, count: int) -> list[str]:
        """``[name]`` for one copy, else ``name-1`` … ``name-<count>``."""
        return [self.name] if count == 1 else [f"{self.name}-{i}" for i in range(1, count + 1)]

    def argv(self) -> list[str]:
        return [sys.executable if part == PYTHON else part for part in self.command]

    def probe(self, addr: str, tls_dir: Path | None = None) -> Probe | None:
        """How to tell this process is ready (gRPC health over mTLS when `tls_dir` is set)."""
        host, _, port = addr.rpartition(":")
        if self.readiness == "grpc":
            return grpc_health_probe(addr, tls_dir=tls_dir)
        if self.readiness == "http":
            return http_get_probe(host, int(port), self.health_path)
        return None


DEFAULT_SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef.grpc("group", "group_svc", 50051, database="group_db"),
    ServiceDef.http("sandbox", "payment_svc.sandbox", 8090, health_path="/healthz"),
    # PayPal and Razorpay as members may choose them, through their real adapters (dev only)
    ServiceDef(
        "paypal", (PYTHON, "-m", "payment_svc.simulators", "paypal"), 8092, "http", scalable=False
    ),
    ServiceDef(
        "razorpay",
        (PYTHON, "-m", "payment_svc.simulators", "razorpay"),
        8093,
        "http",
        scalable=False,
    ),
    ServiceDef.grpc("payment", "payment_svc", 50052, database="payment_db"),
    ServiceDef.http("merchant", "order_svc.sandbox_merchant", 8091, health_path="/healthz"),
    ServiceDef.grpc("order", "order_svc", 50053, database="order_db"),
    # SMTP sink: HTTP API on MPPO_SMTP_SINK_ADDR (8026), SMTP on 8025 (or a free port when that
    # is taken, announced at GET /info, where the notification service looks it up).
    ServiceDef.http("smtp-sink", "notification_svc.smtp_sink", 8026),
    ServiceDef.grpc("notification", "notification_svc", 50054, database="notification_db"),
    ServiceDef("gateway", (PYTHON, "-m", "gateway"), 8080, "http", env={"MPPO_JWT_JWKS": "dev"}),
)
"""One of each process; the sandbox provider, the PayPal and Razorpay simulators, the sandbox
merchant and the SMTP sink are stand-ins for outside parties and never replicated."""

GROUP_SCHEDULER = ServiceDef(
    "group-scheduler",
    (PYTHON, "-m", "group_svc.standalone_scheduler"),
    0,
    "grpc",
    database="group_db",
    database_var="MPPO_GROUP_DATABASE_URL",
)
"""The worker/scheduler role: the group service's expiry scheduler as its own process (the
same code, another entry point; health only, on ``MPPO_GROUP_SCHEDULER_ADDR``)."""


def with_worker_role(services: Sequence[ServiceDef]) -> tuple[ServiceDef, ...]:
    """``services`` with the group scheduler moved out of the group service into its own
    process (``MPPO_GROUP_SCHEDULER=off`` on group), right after group."""
    out: list[ServiceDef] = []
    for svc in services:
        if svc.name == GROUP_SCHEDULER.name:
            continue
        if svc.name == "group":
            out.append(replace(svc, env={**svc.env, "MPPO_GROUP_SCHEDULER": "off"}))
            out.append(GROUP_SCHEDULER)
        else:
            out.append(svc)
    return tuple(out)


def _from_json(path: Path) -> tuple[ServiceDef, ...]:
    items = json.loads(path.read_text())
    services = []
    for item in items:
        readiness = item.get("readiness", "grpc")
        if readiness not in ("grpc", "http", "none"):
            raise ValueError(f"{path}: {item.get('name')}: readiness {readiness!r}")
        services.append(
            ServiceDef(
                name=str(item["name"]),
                command=tuple(str(part) for part in item["command"]),
                port=int(item.get("port", 0)),
                readiness=readiness,
                database=item.get("database"),
                health_path=str(item.get("health_path", "/healthz")),
                env={str(k): str(v) for k, v in item.get("env", {}).items()},
                replicas=int(item.get("replicas", 0)),
                scalable=bool(item.get("scalable", readiness == "grpc")),
                database_var=str(item.get("database_var", "")),
            )
        )
    check_services(services, str(path))
    return tuple(services)


def check_services(services: Sequence[ServiceDef], where: str = "services") -> None:
    """ValueError for duplicate names, negative replica counts or a stand-in asked for more
    than one copy."""
    names = [svc.name for svc in services]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: duplicate service names in {names}")
    for svc in services:
        if svc.replicas < 0:
            raise ValueError(f"{where}: {svc.name}: replicas must be 0 (default) or more")
        if svc.replicas > 1 and not svc.scalable:
            raise ValueError(f"{where}: {svc.name} is not scalable; it runs once")


def load_services(ref: str | None = None) -> tuple[ServiceDef, ...]:
    """Services named by ``ref`` (or ``$MPPO_DEV_SERVICES``), else :data:`DEFAULT_SERVICES`.

    ``ref`` is ``package.module:ATTRIBUTE`` or the path of a JSON list of objects with the
    fields of :class:`ServiceDef` (``command`` may use ``"{python}"``).
    """
    ref = ref if ref is not None else os.environ.get(ENV_SERVICES, "")
    if not ref:
        return DEFAULT_SERVICES
    if ref.endswith(".json") or os.path.sep in ref:
        return _from_json(Path(ref))
    module_name, _, attr = ref.partition(":")
    value = getattr(importlib.import_module(module_name), attr or "SERVICES")
    if not isinstance(value, Sequence) or not all(isinstance(s, ServiceDef) for s in value):
        raise TypeError(f"{ref} is not a sequence of ServiceDef")
    return tuple(value)
