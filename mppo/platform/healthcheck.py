"""``python -m mppo.platform.healthcheck ADDR [--live]``: the gRPC health check of a service,
over mutual TLS with the process's own certificate, for probes (Kubernetes exec probes, the
compose healthcheck).

A service speaks nothing but mutual TLS, so the kubelet's plaintext ``grpc:`` probe cannot ask
it; this asks ``grpc.health.v1.Health/Check`` the way a peer does, with the material named by
``MPPO_TLS_CA_FILE``/``MPPO_TLS_CERT_FILE``/``MPPO_TLS_KEY_FILE`` (or ``MPPO_TLS_DIR`` and
``--as NAME``). Exit 0 when the server answers SERVING; with ``--live``, when it answers at all
(NOT_SERVING while Postgres, Redis or NATS is away is alive: restarting it would not help), so
liveness never follows a dependency's outage while readiness does. Exit 1 otherwise, with one
line saying why.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mppo.platform.tls import TlsConfigError, TlsMaterial, channel_credentials


def check(addr: str, material: TlsMaterial | None, *, live: bool, timeout: float) -> str:
    """ "" when healthy, else why not."""
    if material is None:
        channel = grpc.insecure_channel(addr)
    else:
        channel = grpc.secure_channel(addr, channel_credentials(material))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"no answer from {addr}: {exc.code().name}"
    if live or reply.status == health_pb2.HealthCheckResponse.SERVING:
        return ""
    return f"{addr} answers {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mppo.platform.healthcheck")
    parser.add_argument("addr", help="host:port of the service (e.g. 127.0.0.1:50051)")
    parser.add_argument("--live", action="store_true", help="any answer is healthy")
    parser.add_argument("--as", dest="name", default="", help="identity in MPPO_TLS_DIR")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    name = args.name or os.environ.get("MPPO_PROCESS_NAME", "").strip() or "operator"
    try:
        material = TlsMaterial.from_env(os.environ, name)
    except TlsConfigError as exc:
        sys.stderr.write(f"healthcheck: {exc}\n")
        return 1
    problem = check(args.addr, material, live=args.live, timeout=args.timeout)
    if problem:
        sys.stderr.write(f"healthcheck: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
