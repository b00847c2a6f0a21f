"""Start real service processes (`python -m <name>_svc`) against the test infrastructure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mppo.devstack.probes import free_port
from mppo.platform.identity import SERVICE_KEY, USER_ID_KEY
from mppo.platform.tls import TlsMaterial, channel_credentials

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ChildProcess:
    """A process a test started: its Popen and log file, and how to end it."""

    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        """Everything the process logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code (SIGKILL after `timeout`, returning -9, so a hang
        fails the test)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@dataclass
class ServiceProcess(ChildProcess):
    """A running service: its process, address and log file."""

    name: str
    addr: str
    #: the PKI the service's mutual TLS uses (None: plaintext, development mode)
    tls_dir: Path | None = None


def start_service(
    name: str,
    *,
    database_url: str,
    redis_url: str,
    nats_url: str,
    nats_prefix: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    addr: str | None = None,
    module: str | None = None,
    tls_dir: Path | None = None,
) -> ServiceProcess:
    """Start `python -m <module or name_svc>` on a free port (or `addr`).

    With `tls_dir` (a PKI from tests/support/pki.py) it serves mutual TLS and knows callers
    by their certificates; without, it runs in explicit development plaintext mode
    (MPPO_ENV=test, MPPO_GRPC_PLAINTEXT=1), where identities come from metadata.
    """
    addr = addr or f"127.0.0.1:{free_port()}"
    trust_env = (
        {"MPPO_TLS_DIR": str(tls_dir)}
        if tls_dir is not None
        else {"MPPO_GRPC_PLAINTEXT": "1", "MPPO_TLS_DIR": ""}
    )
    full_env = {
        **os.environ,
        "MPPO_ENV": "test",
        **trust_env,
        f"MPPO_{name.upper()}_DATABASE_URL": database_url,
        f"MPPO_{name.upper()}_ADDR": addr,
        "MPPO_REDIS_URL": redis_url,
        "MPPO_NATS_URL": nats_url,
        "MPPO_NATS_PREFIX": nats_prefix,
        # its own free metrics port: a test may run several copies of a service
        "MPPO_METRICS_ADDR": "127.0.0.1:0",
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{addr.rsplit(':', 1)[1]}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module or f"{name}_svc"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name=name, addr=addr, process=process, log=log, tls_dir=tls_dir)


def grpc_channel(
    addr: str, tls_dir: Path | None = None, name: str = "operator"
) -> grpc.aio.Channel:
    """A plain channel to `addr`, or one presenting `name`'s certificate from `tls_dir`."""
    if tls_dir is None:
        return grpc.aio.insecure_channel(addr)
    material = TlsMaterial.load(tls_dir, name)
    return grpc.aio.secure_channel(addr, channel_credentials(material))


async def health_status(addr: str, service: str = "", tls_dir: Path | None = None) -> int | None:
    """The health status of `service` at `addr`, or None when nothing answers."""
    async with grpc_channel(addr, tls_dir) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.aio.AioRpcError:
            return None
    return int(reply.status)


async def wait_for_status(
    addr: str, service: str, wanted: int, within: float, tls_dir: Path | None = None
) -> int | None:
    """Poll until the health status is `wanted` or `within` seconds pass; the last status seen."""
    deadline = asyncio.get_running_loop().time() + within
    status = None
    while asyncio.get_running_loop().time() < deadline:
        status = await health_status(addr, service, tls_dir)
        if status == wanted:
            return status
        await asyncio.sleep(0.2)
    return status


async def wait_serving(proc: ServiceProcess, within: float = 30) -> None:
    """Wait until `proc` reports SERVING; fail with its log otherwise."""
    status = await wait_for_status(proc.addr, "", SERVING, within, proc.tls_dir)
    if status != SERVING:
        raise AssertionError(f"{proc.name} not SERVING ({status}):\n{proc.log_text()}")


@contextlib.contextmanager
def stopped_at_exit(*procs: ServiceProcess) -> Iterator[None]:
    """Stop every process when the block ends, whatever happens inside it."""
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


class _AsService(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds `x-mppo-service` to every call that names no caller (tests acting as a peer)."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if SERVICE_KEY not in metadata and USER_ID_KEY not in metadata:
            metadata[SERVICE_KEY] = self._service
        details = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return await continuation(details, request)


def service_channel(addr: str, service: str = "tests") -> grpc.aio.Channel:
    """A channel whose calls identify as one of our services unless they say otherwise."""
    interceptor: Any = _AsService(service)
    return grpc.aio.insecure_channel(addr, interceptors=[interceptor])
