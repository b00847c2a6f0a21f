"""The processes ``mppo dev up`` runs on top of the infrastructure: one line per service."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mppo.devstack.probes import grpc_health_probe, http_get_probe
from mppo.devstack.process import Probe

__all__ = [
    "DEFAULT_SERVICES",
    "ENV_SERVICES",
    "PYTHON",
    "ServiceDef",
    "load_services",
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
    ``MPPO_<NAME>_DATABASE_URL``. Readiness is the gRPC health check (``grpc``), an HTTP GET of
    ``health_path`` answering 200 (``http``), or just "still running" (``none``).
    """

    name: str
    command: tuple[str, ...]
    port: int
    readiness: ReadinessKind = "grpc"
    database: str | None = None
    health_path: str = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def grpc(cls, name: str, module: str, port: int, *, database: str | None = None) -> ServiceDef:
        return cls(name, (PYTHON, "-m", module), port, "grpc", database)

    @classmethod
    def http(
        cls, name: str, module: str, port: int, *, health_path: str = "/healthz"
    ) -> ServiceDef:
        return cls(name, (PYTHON, "-m", module), port, "http", health_path=health_path)

    @property
    def env_prefix(self) -> str:
        return f"MPPO_{self.name.upper().replace('-', '_')}"

    @property
    def addr_env(self) -> str:
        return f"{self.env_prefix}_ADDR"

    @property
    def database_env(self) -> str:
        return f"{self.env_prefix}_DATABASE_URL"

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
    ServiceDef.grpc("payment", "payment_svc", 50052, database="payment_db"),
    ServiceDef.http("merchant", "order_svc.sandbox_merchant", 8091, health_path="/healthz"),
    ServiceDef.grpc("order", "order_svc", 50053, database="order_db"),
    # SMTP sink: HTTP API on MPPO_SMTP_SINK_ADDR (8026), SMTP on 8025 (or a free port when that
    # is taken, announced at GET /info, where the notification service looks it up).
    ServiceDef.http("smtp-sink", "notification_svc.smtp_sink", 8026),
    ServiceDef.grpc("notification", "notification_svc", 50054, database="notification_db"),
    ServiceDef("gateway", (PYTHON, "-m", "gateway"), 8080, "http", env={"MPPO_JWT_JWKS": "dev"}),
    # later: ServiceDef.http("stripe-sandbox", "...", 8090), ...("razorpay-sandbox", ..., 8091)
)


def _from_json(path: Path) -> tuple[ServiceDef, ...]:
    items = json.loads(path.read_text())
    services = []
    for item in items:
        services.append(
            ServiceDef(
                name=str(item["name"]),
                command=tuple(str(part) for part in item["command"]),
                port=int(item.get("port", 0)),
                readiness=item.get("readiness", "grpc"),
                database=item.get("database"),
                health_path=str(item.get("health_path", "/healthz")),
                env={str(k): str(v) for k, v in item.get("env", {}).items()},
            )
        )
    return tuple(services)


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
