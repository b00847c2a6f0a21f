"""Wiring of the order service: one place that connects the parts, nothing at import time.

`build(infra)` (called once, when the connections are up) builds the clients (merchant,
payment, group), the Redis aids, the saga and its runner, the handlers, the servicer and the
`group.finalized` consumer; `Parts.close` closes the clients once the workers have stopped.
"""

from __future__ import annotations

from pathlib import Path

from mppo.clients.group import GroupClient
from mppo.clients.payment import PaymentClient
from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc
from mppo.platform.db import create_sessionmaker
from mppo.platform.runtime import Infra, Parts, Servicer, ServiceSpec
from order_svc.adapters.merchant_http import (
    HttpMerchantClient,
    RetryPolicy,
    SingleMerchantDirectory,
)
from order_svc.adapters.payment_gateway import PaymentServiceGateway
from order_svc.adapters.redis_aids import OrderLocks, OrderStatusCache
from order_svc.config import OrderConfig, load_config
from order_svc.entrypoints.consumers import group_consumer
from order_svc.entrypoints.grpc_servicer import OrderServiceServicer
from order_svc.service_layer.handlers import OrderHandlers
from order_svc.service_layer.runner import SagaRunner
from order_svc.service_layer.saga import OrderSaga, SagaSettings
from order_svc.service_layer.unit_of_work import OrderUnitOfWork

SERVICE_NAME = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


def build(infra: Infra) -> Parts:
    """Build everything from the live connections and the order settings."""
    config = infra.config if isinstance(infra.config, OrderConfig) else load_config()
    prefix = config.infra.nats_prefix
    redis_prefix = f"{prefix}:" if prefix else ""
    sessions = create_sessionmaker(infra.engine)

    def uow() -> OrderUnitOfWork:
        return OrderUnitOfWork(sessions)

    merchants = SingleMerchantDirectory(
        HttpMerchantClient(
            config.merchant_url,
            config.merchant_secret.encode(),
            policy=RetryPolicy(
                attempts=config.merchant_attempts, timeout_seconds=config.merchant_timeout
            ),
        )
    )
    payments = PaymentClient(config.payment_addr, "order")
    groups = GroupClient(config.group_addr, "order")
    cache = OrderStatusCache(infra.redis, redis_prefix)
    settings = SagaSettings(
        lease_seconds=config.lease_seconds, max_forward_attempts=config.max_attempts
    )
    saga = OrderSaga(
        uow,
        merchants,
        PaymentServiceGateway(payments),
        OrderLocks(infra.redis, redis_prefix),
        cache,
        settings,
    )
    runner = SagaRunner(uow, saga, settings, poll_interval=config.poll_seconds)
    handlers = OrderHandlers(cache, groups, runner.wake, merchants)

    async def close() -> None:
        await merchants.close()
        await payments.close()
        await groups.close()

    return Parts(
        servicers=[
            Servicer(
                order_service_pb2_grpc.add_OrderServiceServicer_to_server,
                OrderServiceServicer(uow, handlers),
            )
        ],
        workers=[runner, group_consumer(infra.js, uow, handlers, prefix=prefix)],
        close=close,
    )


SPEC = ServiceSpec(
    name="order",
    grpc_services=[SERVICE_NAME],
    migrations=Path(__file__).resolve().parent / "migrations",
    build=build,
    # the group service prices a cart when its group is created, and places the group's
    # order once it is fully paid; nobody else may
    service_only={"CreateOrder": frozenset({"group"}), "QuoteCart": frozenset({"group"})},
)
