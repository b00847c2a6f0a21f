"""Wiring of the payment service: one place that connects the parts, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from mppo.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.config import service_addr
from mppo.platform.db import create_sessionmaker
from mppo.platform.membership import GroupAccess
from mppo.platform.runtime import Infra, ServiceSpec, Worker
from payment_svc.adapters.cache import IntentCache
from payment_svc.adapters.providers.registry import build_providers, close_providers
from payment_svc.config import PaymentSettings
from payment_svc.entrypoints.consumers import build_consumers
from payment_svc.entrypoints.grpc_servicer import PaymentServiceServicer
from payment_svc.service_layer.payments import PaymentService
from payment_svc.service_layer.reconciliation import Reconciler

SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


@dataclass
class Container:
    """The service's long-lived parts, built once per process from the live connections."""

    service: PaymentService
    reconciler: Reconciler


_containers: dict[int, Container] = {}


def container(infra: Infra) -> Container:
    """The parts for ``infra`` (built on first use: register() and workers() share them)."""
    found = _containers.get(id(infra))
    if found is None:
        settings = PaymentSettings.from_env()
        service = PaymentService(
            create_sessionmaker(infra.engine),
            build_providers(settings),
            settings,
            IntentCache(infra.redis, prefix=infra.config.infra.nats_prefix),
        )
        reconciler = Reconciler(service)
        service.on_compensation_due = reconciler.wake
        found = _containers[id(infra)] = Container(service, reconciler)
    return found


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the payment service's servicers to ``server``."""
    payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
        PaymentServiceServicer(
            container(infra).service,
            GroupAccess(service_addr(os.environ, "group"), "payment"),
        ),
        server,
    )


class _ProviderCloser:
    """Closes the adapters' HTTP sessions when the process stops."""

    def __init__(self, parts: Container) -> None:
        self._parts = parts
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        await self._stopping.wait()
        with contextlib.suppress(Exception):
            await close_providers(dict(self._parts.service.providers))

    def stop(self) -> None:
        self._stopping.set()


def workers(infra: Infra) -> Sequence[Worker]:
    """Event consumers (group/order closures), the reconciler, and provider cleanup."""
    parts = container(infra)
    consumers = build_consumers(
        infra.engine, infra.js, infra.config.infra.nats_prefix, parts.reconciler.wake
    )
    return [*consumers, parts.reconciler, _ProviderCloser(parts)]


SPEC = ServiceSpec(
    name="payment",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
    workers=workers,
)
