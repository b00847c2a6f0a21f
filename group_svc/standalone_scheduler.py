"""Run the group expiry scheduler alone: `python -m group_svc.standalone_scheduler`.

The same worker the group service runs (unless MPPO_GROUP_SCHEDULER=off), as its own
process so it can be scaled separately. It uses the group database, Redis and NATS like the
service, relays its own outbox, and serves only gRPC health on MPPO_GROUP_SCHEDULER_ADDR
(default: a free port).
"""

from __future__ import annotations

import os

from group_svc.bootstrap import MIGRATIONS, Core
from group_svc.config import GroupSettings
from mppo.platform.config import InfraConfig, ServiceConfig
from mppo.platform.runtime import Infra, Parts, ServiceSpec, run_service
from mppo.platform.settings import Env


def load_config() -> ServiceConfig:
    """The group service's infrastructure, with the scheduler's own listen address."""
    return ServiceConfig(
        name="group-scheduler",
        addr=GroupSettings.from_env().scheduler_addr or "127.0.0.1:0",
        infra=InfraConfig.from_env("group"),
        log_level=Env(os.environ).text("MPPO_LOG_LEVEL", "INFO").upper(),
    )


def build(infra: Infra) -> Parts:
    """No servicers besides health; the scheduler as the one worker."""
    core = Core(infra)
    return Parts(servicers=[], workers=[core.scheduler()], close=core.close)


#: named "group": toward its peers it is the group service (the payment service lets only the
#: group service close and release its payments; under mutual TLS it presents the group's
#: certificate). Its connections say "group-scheduler" (load_config).
SPEC = ServiceSpec(name="group", grpc_services=[], migrations=MIGRATIONS, build=build)

if __name__ == "__main__":
    run_service(SPEC, load_config)
