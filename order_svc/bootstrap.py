"""Wiring of the order service: one place that connects the parts, nothing at import time.

`register()` (called once the infrastructure is up) builds the application — merchant client,
payment gateway, Redis aids, saga and runner — and `workers()` returns the runner, the
`group.finalized` consumer and a worker that closes the clients at shutdown.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc
from mppo.platform.config import service_addr
from mppo.platform.db import create_sessionmaker
from mppo.platform.inbox import EventConsumer
from mppo.platform.membership import GroupAccess
from mppo.platform.runtime import Infra, ServiceSpec, Worker
from order_svc.adapters.merchant_http import (
    HttpMerchantClient,
    RetryPolicy,
    SingleMerchantDirectory,
)
from order_svc.adapters.payments_grpc import GrpcPaymentGateway
from order_svc.adapters.redis_aids import OrderLocks, OrderStatusCache
from order_svc.config import OrderConfig, load_config
from order_svc.entrypoints.consumers import DURABLE, STREAM, SUBJECTS, group_finalized_handler
from order_svc.entrypoints.grpc_servicer import OrderServiceServicer
from order_svc.service_layer.orders import OrderQueries
from order_svc.service_layer.runner import SagaRunner
from order_svc.service_layer.saga import OrderSaga, SagaSettings

SERVICE_NAME = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


class _Closer:
    """A worker that waits for stop() and then closes the outbound clients."""

    def __init__(self, merchants: SingleMerchantDirectory, payments: GrpcPaymentGateway) -> None:
        self._merchants = merchants
        self._payments = payments
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        await self._stopping.wait()
        await self._merchants.close()
        await self._payments.close()

    def stop(self) -> None:
        self._stopping.set()


@dataclass
class OrderApp:
    """The order service's parts, built once per process."""

    servicer: OrderServiceServicer
    workers: Sequence[Worker]


def build_app(infra: Infra) -> OrderApp:
    """Build everything from the live connections and the order settings."""
    config = infra.config if isinstance(infra.config, OrderConfig) else load_config()
    prefix = config.infra.nats_prefix
    redis_prefix = f"{prefix}:" if prefix else ""
    sessions = create_sessionmaker(infra.engine)
    merchants = SingleMerchantDirectory(
        HttpMerchantClient(
            config.merchant_url,
            config.merchant_secret.encode(),
            policy=RetryPolicy(
                attempts=config.merchant_attempts, timeout_seconds=config.merchant_timeout
            ),
        )
    )
    payments = GrpcPaymentGateway(config.payment_addr)
    cache = OrderStatusCache(infra.redis, redis_prefix)
    settings = SagaSettings(
        lease_seconds=config.lease_seconds, max_forward_attempts=config.max_attempts
    )
    saga = OrderSaga(
        sessions, merchants, payments, OrderLocks(infra.redis, redis_prefix), cache, settings
    )
    runner = SagaRunner(sessions, saga, settings, poll_interval=config.poll_seconds)
    consumer = EventConsumer(
        infra.engine,
        infra.js,
        durable=DURABLE,
        stream=STREAM,
        filter_subjects=SUBJECTS,
        handler=group_finalized_handler(runner.wake),
        prefix=prefix,
    )
    servicer = OrderServiceServicer(
        sessions,
        OrderQueries(sessions, cache),
        runner.wake,
        GroupAccess(service_addr(os.environ, "group"), "order"),
    )
    return OrderApp(servicer=servicer, workers=[runner, consumer, _Closer(merchants, payments)])


_apps: dict[int, OrderApp] = {}


def _app(infra: Infra) -> OrderApp:
    key = id(infra)
    if key not in _apps:
        _apps[key] = build_app(infra)
    return _apps[key]


def register(server: grpc.aio.Server, infra: Infra) -> None:
    """Add the order service's servicer to `server`."""
    order_service_pb2_grpc.add_OrderServiceServicer_to_server(_app(infra).servicer, server)


def workers(infra: Infra) -> Sequence[Worker]:
    """The saga runner (with recovery), the group.finalized consumer, the client closer."""
    return _app(infra).workers


SPEC = ServiceSpec(
    name="order",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    register=register,
    workers=workers,
)
