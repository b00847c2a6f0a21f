"""The life of one gRPC service process: serve, connect, report health, stop gracefully.

A service describes itself with a `ServiceSpec` (name, gRPC service names, migrations, and
`build(infra) -> Parts`: its servicers, its background workers and what to close at the end)
and calls `run_service()` from its `__main__`. `build` runs once, when the connections are up.
The server listens at once and reports NOT_SERVING through the standard health service until
its Postgres (migrated), Redis and NATS JetStream (streams provisioned) are connected; a
watchdog flips it back to NOT_SERVING whenever one of them stops answering. SIGTERM or SIGINT
stops accepting calls, lets running calls finish, stops the workers and closes connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, cast

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mppo.platform import idempotency, messaging, metrics, telemetry
from mppo.platform import trust as trust_mod
from mppo.platform.config import ConfigError, ServiceConfig
from mppo.platform.db import create_engine
from mppo.platform.errors import DomainError
from mppo.platform.identity import Caller, reset_verified, set_verified
from mppo.platform.inbox import EventConsumer
from mppo.platform.logs import configure_logging
from mppo.platform.migrations import upgrade_head
from mppo.platform.outbox import OutboxRelay
from mppo.platform.retention import Pruner, PruneTarget
from mppo.platform.rpc_status import abort, guard
from mppo.platform.telemetry import configure_tracing
from mppo.platform.trust import Trust
from mppo.platform.validation import check_message
from mppo.platform.worker import Worker

logger = logging.getLogger(__name__)

OVERALL = ""  # the health service's name for the server as a whole
#: clients reconnect at least every 5 minutes (calls in flight get 30 s to finish), so that a
#: round-robin client of a DNS target (a headless Service) re-resolves and finds new replicas
SERVER_OPTIONS = (
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
)
CONNECT_ATTEMPT_SECONDS = 15.0


@dataclass
class Infra:
    """A service's live connections, handed to its registration and worker factories."""

    config: ServiceConfig
    engine: AsyncEngine
    redis: aioredis.Redis
    nats: NatsClient
    js: JetStreamContext

    async def check(self) -> list[str]:
        """Names of the dependencies that do not answer right now (empty when all do)."""
        failing: list[str] = []
        try:
            async with asyncio.timeout(2), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            failing.append("postgres")
        try:
            async with asyncio.timeout(2):
                await self.redis.ping()
        except Exception:
            failing.append("redis")
        if not self.nats.is_connected:
            failing.append("nats")
        return failing

    async def close(self) -> None:
        """Close every connection; safe to call once at shutdown."""
        with contextlib.suppress(Exception):
            await self.nats.drain()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        await self.engine.dispose()


@dataclass(frozen=True)
class Servicer:
    """One gRPC servicer and the generated function that adds it to a server."""

    add: Callable[[Any, grpc.aio.Server], None]
    implementation: object

    def mount(self, server: grpc.aio.Server) -> None:
        """Add the servicer to `server`."""
        self.add(self.implementation, server)


async def _nothing_to_close() -> None:
    return None


@dataclass(frozen=True)
class Parts:
    """What a service is made of once connected: built once per process by `ServiceSpec.build`."""

    servicers: Sequence[Servicer]
    #: background loops (consumers, schedulers); the outbox relay and the pruner are added by
    #: the runtime
    workers: Sequence[Worker] = ()
    #: closes what `build` opened (clients, sessions), after the workers stopped
    close: Callable[[], Awaitable[None]] = _nothing_to_close
    #: the service's own tables to prune, besides outbox, inbox and idempotency keys
    prune: Sequence[PruneTarget] = ()
    #: the service's own sampled gauges (name → coroutine reading them), read with the
    #: platform's (outbox, consumers) every MPPO_METRICS_SAMPLE_SECONDS
    samples: Mapping[str, metrics.Sample] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    """What makes one service different from another."""

    name: str
    #: fully qualified gRPC service names, for health and reflection
    grpc_services: Sequence[str]
    #: the service's Alembic script directory
    migrations: Path
    #: builds the servicers, workers and closer from the live connections (called once)
    build: Callable[[Infra], Parts | Awaitable[Parts]]
    #: service-only methods (short name, e.g. "CapturePayment") → the services that may call
    #: them; every other method is open to end users (through the gateway) and our services
    service_only: Mapping[str, frozenset[str]] = field(default_factory=dict)

    async def parts(self, infra: Infra) -> Parts:
        """Call `build`, awaiting it when it is a coroutine."""
        built = self.build(infra)
        if inspect.isawaitable(built):
            return await built
        return built


async def connect_infra(config: ServiceConfig, migrations: Path) -> Infra:
    """Connect to Postgres (and migrate it), Redis and NATS (and provision the streams).

    What was opened is closed again when a later step fails, so retries leak nothing.
    """
    await upgrade_head(migrations, config.infra.database_url)
    engine = create_engine(config.infra.database_url, application_name=f"mppo-{config.name}")
    client = aioredis.Redis.from_url(
        config.infra.redis_url, socket_timeout=2, socket_connect_timeout=2
    )
    nats: NatsClient | None = None
    try:
        await client.ping()
        nats = await messaging.connect(config.infra.nats_url, name=f"mppo-{config.name}")
        js = nats.jetstream()
        await messaging.ensure_streams(
            js,
            config.infra.nats_prefix,
            limits=config.infra.retention.streams,
            num_replicas=config.infra.stream_replicas,
        )
    except BaseException:
        if nats is not None:
            with contextlib.suppress(Exception):
                await nats.close()
        await client.aclose()
        await engine.dispose()
        raise
    return Infra(config=config, engine=engine, redis=client, nats=nats, js=js)


async def _connect_with_retry(
    config: ServiceConfig, spec: ServiceSpec, stopping: asyncio.Event
) -> Infra | None:
    """Connect, retrying with backoff; gives up (None) as soon as a stop is requested."""
    delay = 0.2
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        while not stopping.is_set():
            attempt = asyncio.create_task(
                asyncio.wait_for(connect_infra(config, spec.migrations), CONNECT_ATTEMPT_SECONDS)
            )
            await asyncio.wait({attempt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                return None
            exc = attempt.exception()
            if exc is None:
                return attempt.result()
            logger.warning("dependencies not ready (%s: %s); retrying", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stop_wait), delay)
            delay = min(delay * 2, 5.0)
        return None
    finally:
        stop_wait.cancel()


async def _set_all(health: HealthServicer, names: Sequence[str], serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (OVERALL, *names):
        await health.set(name, status)


async def _watchdog(
    infra: Infra, health: HealthServicer, names: Sequence[str], stopping: asyncio.Event
) -> None:
    serving = True
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 2.0)
        if stopping.is_set():
            return
        failing = await infra.check()
        if bool(failing) == serving:
            serving = not failing
            logger.warning("health: %s", "SERVING" if serving else f"NOT_SERVING ({failing})")
            await _set_all(health, names, serving)


#: authenticates one call: (context, method) → the verified caller (raises DomainError)
Admit = Callable[[grpc.aio.ServicerContext[Any, Any], str], Awaitable[Caller]]


class LateBoundHandlers(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Routes calls to the service's own handlers, which exist only once it is connected.

    gRPC wants every handler added before the server starts, but the server starts first so
    that health checks can answer NOT_SERVING while dependencies connect. This handler is
    added before the start; `register()` later fills it through `registrar()`. Until then the
    service's methods answer UNAVAILABLE, never a misleading UNIMPLEMENTED.
    """

    def __init__(self, service_names: Sequence[str], admit: Admit | None = None) -> None:
        self._admit = admit
        self._prefixes = tuple(f"/{name}/" for name in service_names)
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler[Any, Any]] = []
        self.bound = False

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The handler for a call, or None for methods that are not ours."""
        method = handler_call_details.method
        if method in self._methods:
            return self._methods[method]
        for handler in self._generic:
            found = handler.service(handler_call_details)
            if found is not None:
                return found
        if not self.bound and method.startswith(self._prefixes):
            return grpc.unary_unary_rpc_method_handler(_not_ready)
        return None

    def registrar(self) -> grpc.aio.Server:
        """A stand-in server whose add_* methods fill this handler (for generated code)."""
        owner = self

        class _Registrar:
            def add_generic_rpc_handlers(
                self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
            ) -> None:
                owner._generic.extend(handlers)

            def add_registered_method_handlers(
                self, service_name: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
            ) -> None:
                for method, handler in handlers.items():
                    name = f"/{service_name}/{method}"
                    owner._methods[name] = _guarded(handler, name, owner._admit)

        return cast(grpc.aio.Server, _Registrar())


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], name: str, admit: Admit | None
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` behind the service boundary: the caller authenticated (`admit`), the request
    checked for hostile input (`check_message`), then the one error mapping (DomainError →
    status, outages → UNAVAILABLE). A call answered with a stored idempotent response sends
    `idempotent-replayed: true` (initial metadata). Every call is counted and timed by status code
    (metrics.RpcMeter) and, when no trace exporter runs a server interceptor, continues the
    caller's trace so that its log lines carry the trace id (telemetry.continue_trace)."""
    behavior = getattr(handler, "unary_unary", None)
    if behavior is None or not hasattr(handler, "_replace"):
        return handler
    inner = guard(behavior, name)
    meter = metrics.RpcMeter(name)
    continue_trace = not telemetry.exporting()

    async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = perf_counter()
        traced = telemetry.continue_trace(context.invocation_metadata()) if continue_trace else None
        try:
            try:
                caller = await admit(context, name) if admit is not None else None
                check_message(request)
            except DomainError as error:
                await abort(context, error)
            token = set_verified(caller)
            try:
                with idempotency.watch_replays() as watch:
                    reply = await inner(request, context)
                if watch.replayed:  # answered with what an earlier call with its key stored
                    await context.send_initial_metadata(((idempotency.REPLAYED_KEY, "true"),))
            finally:
                reset_verified(token)
        except BaseException as exc:
            meter.failed(metrics.status_of(exc, context), perf_counter() - started)
            raise
        finally:
            telemetry.end_trace(traced)
        meter.ok(perf_counter() - started)
        return reply

    replaced: grpc.RpcMethodHandler[Any, Any] = handler._replace(unary_unary=admitted)
    return replaced


async def _not_ready(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "service is starting; retry shortly")


def admission(spec: ServiceSpec, trust: Trust) -> Admit:
    """How `spec`'s calls are authenticated under `trust`."""

    async def admit(context: grpc.aio.ServicerContext[Any, Any], method: str) -> Caller:
        allowed = spec.service_only.get(method.rsplit("/", 1)[-1])
        return await trust_mod.authenticate(context, method, allowed, trust)

    return admit


def build_server(
    spec: ServiceSpec, trust: Trust | None = None
) -> tuple[grpc.aio.Server, HealthServicer, LateBoundHandlers]:
    """A server with tracing, health, reflection and a slot for the service's own handlers."""
    server = grpc.aio.server(interceptors=telemetry.server_interceptors(), options=SERVER_OPTIONS)
    late = LateBoundHandlers(
        spec.grpc_services, admission(spec, trust) if trust is not None else None
    )
    server.add_generic_rpc_handlers((late,))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *spec.grpc_services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return server, health, late


async def serve(spec: ServiceSpec, config: ServiceConfig, stopping: asyncio.Event) -> None:
    """Run `spec` until `stopping` is set; returns after a graceful stop."""
    trust = trust_mod.current()
    server, health, late = build_server(spec, trust)
    await _set_all(health, spec.grpc_services, serving=False)
    port = trust.add_port(server, config.addr)
    if port == 0:
        raise RuntimeError(f"cannot listen on {config.addr}")
    await server.start()
    logger.info(
        "%s listening on %s (%s; NOT_SERVING until connected)",
        spec.name,
        config.addr,
        "plaintext, development only" if trust.plaintext else "mutual TLS",
    )
    infra = await _connect_with_retry(config, spec, stopping)
    tasks: list[asyncio.Task[None]] = []
    workers: list[Worker] = []
    parts: Parts | None = None
    try:
        if infra is not None:
            parts = await spec.parts(infra)
            for servicer in parts.servicers:
                servicer.mount(late.registrar())
            late.bound = True
            relay = OutboxRelay(infra.engine, infra.js, prefix=config.infra.nats_prefix)
            pruner = Pruner.for_service(
                infra.engine,
                config.infra.retention,
                parts.prune,
                js=infra.js,
                prefix=config.infra.nats_prefix,
            )
            metrics.watch_pruner(pruner)
            consumers = [w for w in parts.workers if isinstance(w, EventConsumer)]
            sampler = metrics.Sampler(
                {
                    "outbox": metrics.outbox_sample(infra.engine),
                    "consumers": metrics.consumer_sample(
                        infra.js, consumers, config.infra.nats_prefix
                    ),
                    **parts.samples,
                },
                interval=metrics.sample_interval(os.environ),
            )
            # the platform's own loops record no traces (a poll is not a request)
            platform: list[Worker] = [relay, pruner, sampler]
            workers = [*platform, *parts.workers]
            tasks = [
                asyncio.create_task(
                    w.run(),
                    name=type(w).__name__,
                    context=telemetry.untraced() if w in platform else None,
                )
                for w in workers
            ]
            tasks.append(
                asyncio.create_task(
                    _watchdog(infra, health, spec.grpc_services, stopping),
                    context=telemetry.untraced(),
                )
            )
            await _set_all(health, spec.grpc_services, serving=True)
            logger.info("%s SERVING on %s", spec.name, config.addr)
            await _wait_until_stopped(stopping, tasks)
    finally:
        logger.info("%s stopping", spec.name)
        await health.enter_graceful_shutdown()
        await server.stop(grace=5)
        for worker in workers:
            worker.stop()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        if parts is not None:
            try:
                await parts.close()
            except Exception:
                logger.exception("%s: closing its parts failed", spec.name)
        if infra is not None:
            await infra.close()
        logger.info("%s stopped", spec.name)


async def _wait_until_stopped(stopping: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for the stop signal; a worker that dies unexpectedly stops the process too."""
    stop_task = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stop_task and task.exception() is not None:
            logger.error("worker %s died", task.get_name(), exc_info=task.exception())
    stopping.set()
    stop_task.cancel()


async def _main(spec: ServiceSpec, config: ServiceConfig) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await serve(spec, config, stopping)


def run_service(spec: ServiceSpec, make_config: Callable[[], ServiceConfig]) -> None:
    """Process entry point: read and check every setting, configure logging and tracing, then
    serve on uvloop. A setting that is missing, malformed or a development default outside
    dev/test stops the process with exit code 2 and one line naming the variable."""
    import sys

    import uvloop

    try:
        config = make_config()
        configure_logging(spec.name, config.log_level)
        trust_mod.configure(Trust.from_env(os.environ, spec.name))
        configure_tracing(spec.name)
        telemetry.instrument_libraries()
        served = metrics.serve_metrics(metrics.metrics_addr(os.environ, spec.name), spec.name)
        try:
            uvloop.run(_main(spec, config))
        finally:
            if served is not None:
                served.close()
    except ConfigError as exc:
        logger.critical("%s refuses to start: %s", spec.name, exc)
        sys.stderr.write(f"{spec.name}: configuration error: {exc}\n")
        raise SystemExit(2) from None
