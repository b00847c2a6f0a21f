"""Embedded Postgres/Redis/NATS from PyPI wheels and the process supervisor behind ``mppo dev up``.

Importing this package starts nothing and imports no client library; those load on use.
"""

from mppo.devstack.infra import (
    DEV_PORTS,
    ENV_NATS_URL,
    ENV_POSTGRES_URL,
    ENV_REDIS_URL,
    FREE_PORTS,
    Infra,
    InfraPorts,
    start_infra,
)
from mppo.devstack.postgres import EmbeddedPostgres, create_database, database_url, drop_database
from mppo.devstack.probes import free_port, grpc_health_probe, http_get_probe, tcp_probe
from mppo.devstack.process import (
    ManagedProcess,
    Probe,
    ProcessExitedError,
    ProcessSpec,
    RestartPolicy,
    StartupError,
    Supervisor,
    pid_alive,
)
from mppo.devstack.services import DEFAULT_SERVICES, ENV_SERVICES, ServiceDef, load_services
from mppo.devstack.stack import StackConfig, default_state_dir, down, run_stack, status

__all__ = [
    "DEFAULT_SERVICES",
    "DEV_PORTS",
    "ENV_NATS_URL",
    "ENV_POSTGRES_URL",
    "ENV_REDIS_URL",
    "ENV_SERVICES",
    "FREE_PORTS",
    "EmbeddedPostgres",
    "Infra",
    "InfraPorts",
    "ManagedProcess",
    "Probe",
    "ProcessExitedError",
    "ProcessSpec",
    "RestartPolicy",
    "ServiceDef",
    "StackConfig",
    "StartupError",
    "Supervisor",
    "create_database",
    "database_url",
    "default_state_dir",
    "down",
    "drop_database",
    "free_port",
    "grpc_health_probe",
    "http_get_probe",
    "load_services",
    "pid_alive",
    "run_stack",
    "start_infra",
    "status",
    "tcp_probe",
]
