"""Readiness probes: gRPC health, HTTP GET, TCP connect."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from mppo.devstack.process import Probe

__all__ = ["free_port", "grpc_health_probe", "http_get_probe", "split_addr", "tcp_probe"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (callers retry if someone takes it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


def tcp_probe(host: str, port: int) -> Probe:
    async def probe(pid: int) -> bool:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    return probe


def http_get_probe(host: str, port: int, path: str = "/healthz", expect: int = 200) -> Probe:
    """Ready when ``GET path`` answers ``expect``."""

    async def probe(pid: int) -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == str(expect).encode()

    return probe


def grpc_health_probe(addr: str, service: str = "", tls_dir: Path | None = None) -> Probe:
    """Ready when ``grpc.health.v1.Health/Check`` answers SERVING (asked with the operator's
    certificate from `tls_dir` when the services speak mutual TLS)."""

    async def probe(pid: int) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from mppo.platform.tls import TlsMaterial, channel_credentials

        if tls_dir is None:
            channel = grpc.aio.insecure_channel(addr)
        else:
            material = TlsMaterial.load(tls_dir, "operator")
            channel = grpc.aio.secure_channel(addr, channel_credentials(material))
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
            except grpc.aio.AioRpcError:
                return False
            serving: bool = resp.status == health_pb2.HealthCheckResponse.SERVING
            return serving

    return probe
