"""Run the group expiry scheduler alone: `python -m group_svc.scheduler`.

The same worker the group service runs (unless MPPO_GROUP_SCHEDULER=off), as its own
process so it can be scaled separately. It uses the group database, Redis and NATS like the
service, relays its own outbox, and serves only gRPC health on MPPO_GROUP_SCHEDULER_ADDR
(default: a free port).
"""

from __future__ import annotations

import os

import grpc

from group_svc.bootstrap import MIGRATIONS, build_deps
from group_svc.service_layer.scheduler import ExpiryScheduler
from mppo.platform.config import InfraConfig, ServiceConfig
from mppo.platform.runtime import Infra, ServiceSpec, Worker, run_service


def load_config() -> ServiceConfig:
    """The group service's infrastructure, with the scheduler's own listen address."""
    return ServiceConfig(
        name="group-scheduler",
        addr=os.environ.get("MPPO_GROUP_SCHEDULER_ADDR", "").strip() or "127.0.0.1:0",
        infra=InfraConfig.from_env("group"),
        log_level=os.environ.get("MPPO_LOG_LEVEL", "INFO").upper(),
    )


def _register(server: grpc.aio.Server, infra: Infra) -> None:
    """No servicers besides health."""


def _workers(infra: Infra) -> list[Worker]:
    return [ExpiryScheduler(build_deps(infra))]


SPEC = ServiceSpec(
    name="group-scheduler",
    grpc_services=[],
    migrations=MIGRATIONS,
    register=_register,
    workers=_workers,
)

if __name__ == "__main__":
    run_service(SPEC, load_config)
