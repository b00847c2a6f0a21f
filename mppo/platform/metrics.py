"""Prometheus metrics: what every process exports, and the one endpoint that serves them.

Each process serves ``GET /metrics`` on its own port, ``MPPO_METRICS_ADDR`` (``host:port``;
``off`` serves none; the defaults are :data:`DEFAULT_METRICS_ADDRS`; port 0 picks a free one and
logs it). No metric carries a service or instance label of its own: Prometheus adds ``job``,
``instance`` (the scraped address) and the ``service`` label of the scrape target, so every
replica is its own series and queries aggregate with ``by (service)``.

Cheap by construction, since every RPC and every consumed event pays for it: label children
are resolved once (per RPC method when the runtime registers it, per consumer when it is
built); an RPC costs two clock reads, one counter increment and one histogram observation.
Values that live in Postgres or NATS (outbox backlog, consumer lag, dead letters, payment
holds) are read by a :class:`Sampler` every ``MPPO_METRICS_SAMPLE_SECONDS`` (default 15), never
on a scrape, so a scrape never waits for a database.

The names, one line each (README "Observing it" has the alerts built on them):

* ``grpc_server_handled_total{grpc_service,grpc_method,grpc_code}``,
  ``grpc_server_handling_seconds{grpc_service,grpc_method}`` — RED per RPC (every service);
* ``mppo_http_requests_total{route,method,status}``,
  ``mppo_http_request_duration_seconds{route,method}`` — RED per REST route (gateway);
* ``mppo_outbox_backlog_events``, ``mppo_outbox_oldest_age_seconds`` — events committed and not
  yet published (sampled);
* ``mppo_consumer_pending_messages{consumer}`` (lag: in the stream, not yet delivered),
  ``mppo_consumer_ack_pending_messages{consumer}``,
  ``mppo_consumer_redelivered_messages{consumer}`` (sampled from JetStream);
  ``mppo_consumer_events_total{consumer,outcome}`` (applied, duplicate, retried,
  dead_lettered, ignored) and ``mppo_consumer_redeliveries_total{consumer}`` (counted);
* ``mppo_dead_letter_messages{consumer}`` — what the dead-letter stream holds from each
  consumer (sampled; it never expires, so anything above 0 waits for an operator);
* ``mppo_retention_*`` and ``mppo_stream_*`` — the pruner's :meth:`Pruner.metrics`;
* service metrics: ``mppo_payment_*`` (payment_svc/observability.py), ``mppo_order_saga_*``
  (order_svc/observability.py), ``mppo_checkout_duration_seconds`` (group_svc/observability.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from mppo.platform.config import ConfigError
from mppo.platform.worker import LoopWorker

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from nats.js import JetStreamContext
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mppo.platform.retention import Pruner

logger = logging.getLogger(__name__)

METRICS_ADDR_VAR = "MPPO_METRICS_ADDR"
SAMPLE_SECONDS_VAR = "MPPO_METRICS_SAMPLE_SECONDS"
#: where each process serves /metrics unless MPPO_METRICS_ADDR says otherwise (the gRPC ports
#: 50051-4 and the gateway's 8080, mirrored)
DEFAULT_METRICS_ADDRS: Mapping[str, str] = {
    "group": "127.0.0.1:9151",
    "payment": "127.0.0.1:9152",
    "order": "127.0.0.1:9153",
    "notification": "127.0.0.1:9154",
    "gateway": "127.0.0.1:9180",
}
_OFF = frozenset({"off", "none", "no", "false"})

#: seconds: 1 ms to 10 s (an RPC or REST call)
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds: 10 ms to 2 min (a saga step: an external call and a commit)
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# ---------------------------------------------------------------- RED per RPC

RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed by this server, by gRPC status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from a call reaching its handler to its answer (admission included).",
    ["grpc_service", "grpc_method"],
    buckets=CALL_BUCKETS,
)
#: gRPC codes that mean "our fault or our dependencies'", the 5xx of gRPC
SERVER_ERROR_CODES = frozenset({"INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS"})
_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


class _Child(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Observed(Protocol):
    def observe(self, amount: float) -> None: ...


def code_name(code: object) -> str:
    """The name of a gRPC status code as a servicer context reports it (enum or number)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int) and code in _CODE_BY_VALUE:
        return _CODE_BY_VALUE[code].name
    return "UNKNOWN"


def status_of(exc: BaseException, context: Any) -> str:
    """The status a call that raised `exc` ended with (aborts set it on the context)."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    try:
        return code_name(context.code())
    except Exception:
        return "UNKNOWN"


class RpcMeter:
    """The RED series of one RPC method, resolved once when the method is registered."""

    __slots__ = ("_codes", "_method", "_ok", "_seconds", "_service")

    def __init__(self, full_method: str) -> None:
        service, _, method = full_method.lstrip("/").partition("/")
        self._service = service
        self._method = method
        self._seconds: _Observed = RPC_SECONDS.labels(service, method)
        self._ok: _Child = RPC_HANDLED.labels(service, method, "OK")
        self._codes: dict[str, _Child] = {}

    def ok(self, seconds: float) -> None:
        """The call answered OK after `seconds`."""
        self._ok.inc()
        self._seconds.observe(seconds)

    def failed(self, code: str, seconds: float) -> None:
        """The call ended with status `code` (a StatusCode name) after `seconds`."""
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = RPC_HANDLED.labels(self._service, self._method, code)
        child.inc()
        self._seconds.observe(seconds)


# ---------------------------------------------------------------- RED per REST route

HTTP_REQUESTS = Counter(
    "mppo_http_requests_total",
    "REST requests answered by the gateway, by route template, method and HTTP status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "mppo_http_request_duration_seconds",
    "Time the gateway took to answer a REST request.",
    ["route", "method"],
    buckets=CALL_BUCKETS,
)


class HttpMeter:
    """RED per REST route; children cached per (route, method) and (route, method, status)."""

    def __init__(self) -> None:
        self._seconds: dict[tuple[str, str], _Observed] = {}
        self._counts: dict[tuple[str, str, int], _Child] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        key = (route, method, status)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = HTTP_REQUESTS.labels(route, method, str(status))
        counter.inc()
        timer = self._seconds.get((route, method))
        if timer is None:
            timer = self._seconds[(route, method)] = HTTP_SECONDS.labels(route, method)
        timer.observe(seconds)


# ---------------------------------------------------------------- outbox, consumers, DLQ

OUTBOX_BACKLOG = Gauge(
    "mppo_outbox_backlog_events",
    "Events committed to this service's outbox and not yet published to NATS (sampled).",
)
OUTBOX_OLDEST = Gauge(
    "mppo_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event, 0 when none waits (sampled).",
)
CONSUMER_PENDING = Gauge(
    "mppo_consumer_pending_messages",
    "Consumer lag: messages in the stream not yet delivered to this durable consumer (sampled).",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "mppo_consumer_ack_pending_messages",
    "Messages delivered to the consumer and not yet acknowledged (sampled).",
    ["consumer"],
)
CONSUMER_REDELIVERED = Gauge(
    "mppo_consumer_redelivered_messages",
    "Unacknowledged messages that were delivered more than once (sampled).",
    ["consumer"],
)
CONSUMER_EVENTS = Counter(
    "mppo_consumer_events_total",
    "Events this process took from a consumer, by outcome "
    "(applied, duplicate, retried, dead_lettered, ignored).",
    ["consumer", "outcome"],
)
CONSUMER_REDELIVERIES = Counter(
    "mppo_consumer_redeliveries_total",
    "Deliveries of a message this consumer had been given before.",
    ["consumer"],
)
DEAD_LETTERS = Gauge(
    "mppo_dead_letter_messages",
    "Messages the dead-letter stream holds from this consumer (sampled; they never expire).",
    ["consumer"],
)
SAMPLE_FAILURES = Counter(
    "mppo_metrics_sample_failures_total",
    "Sampling rounds that could not read a source (the gauges keep their last value).",
    ["source"],
)

CONSUMER_OUTCOMES = ("applied", "duplicate", "retried", "dead_lettered", "ignored")


class ConsumerMeter:
    """The counters of one durable consumer, resolved once."""

    __slots__ = (
        "_durable",
        "applied",
        "dead_lettered",
        "duplicate",
        "ignored",
        "redelivered",
        "retried",
    )

    def __init__(self, durable: str) -> None:
        self._durable = durable
        self.applied: _Child = CONSUMER_EVENTS.labels(durable, "applied")
        self.duplicate: _Child = CONSUMER_EVENTS.labels(durable, "duplicate")
        self.retried: _Child = CONSUMER_EVENTS.labels(durable, "retried")
        self.dead_lettered: _Child = CONSUMER_EVENTS.labels(durable, "dead_lettered")
        self.ignored: _Child = CONSUMER_EVENTS.labels(durable, "ignored")
        self.redelivered: _Child = CONSUMER_REDELIVERIES.labels(durable)


class ConsumerSource(Protocol):
    """What the sampler needs to know about a consumer (EventConsumer fits)."""

    @property
    def durable(self) -> str: ...

    @property
    def stream(self) -> str: ...


_OUTBOX_BACKLOG_SQL = text(
    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(occurred_at)), 0)"
    " FROM outbox WHERE published_at IS NULL"
)

Sample = Callable[[], Awaitable[None]]


def outbox_sample(engine: AsyncEngine) -> Sample:
    """Reads the outbox backlog (through the unpublished-rows index) into its gauges."""

    async def sample() -> None:
        async with engine.connect() as conn:
            count, oldest = (await conn.execute(_OUTBOX_BACKLOG_SQL)).one()
        OUTBOX_BACKLOG.set(int(count))
        OUTBOX_OLDEST.set(max(0.0, float(oldest)))

    return sample


def consumer_sample(
    js: JetStreamContext, consumers: Sequence[ConsumerSource], prefix: str = ""
) -> Sample:
    """Reads each consumer's lag from JetStream and its dead letters from the DLQ stream."""
    from mppo.platform.messaging import DLQ_STREAM, stream_name, subject_for

    dlq = stream_name(DLQ_STREAM, prefix)
    heads = {c.durable: subject_for(f"dlq.{c.durable}.", prefix) for c in consumers}

    async def sample() -> None:
        for consumer in consumers:
            info = await js.consumer_info(consumer.stream, consumer.durable)
            CONSUMER_PENDING.labels(consumer.durable).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(consumer.durable).set(info.num_ack_pending or 0)
            CONSUMER_REDELIVERED.labels(consumer.durable).set(info.num_redelivered or 0)
        if not consumers:
            return
        stream = await js.stream_info(dlq, subjects_filter=subject_for("dlq.>", prefix))
        held = stream.state.subjects or {}
        for durable, head in heads.items():
            DEAD_LETTERS.labels(durable).set(
                sum(count for subject, count in held.items() if subject.startswith(head))
            )

    return sample


class Sampler(LoopWorker):
    """Refreshes the sampled gauges every ``interval`` seconds (first round at start).

    One failing source (a database restart) costs a log line and a counter; the others are
    still read, and the failing one's gauges keep their last value until it answers again.
    """

    name = "metrics sampler"

    def __init__(self, samples: Mapping[str, Sample], *, interval: float = 15.0) -> None:
        super().__init__(poll_interval=interval, max_backoff=interval)
        self._samples = dict(samples)
        self._failing: set[str] = set()

    async def work(self) -> bool:
        """Read every source once."""
        for source, sample in self._samples.items():
            if self.stopping:
                return False
            try:
                async with asyncio.timeout(max(1.0, self.poll_interval)):
                    await sample()
            except Exception as exc:
                SAMPLE_FAILURES.labels(source).inc()
                if source not in self._failing:
                    logger.warning("metrics: %s unreadable: %r", source, exc)
                self._failing.add(source)
                continue
            self._failing.discard(source)
        return False


# ---------------------------------------------------------------- retention (Pruner.metrics)


class _PrunerCollector(Collector):
    """Exports :meth:`Pruner.metrics` of the pruners alive in this process at scrape time."""

    def __init__(self) -> None:
        self._pruners: weakref.WeakSet[Pruner] = weakref.WeakSet()
        self._lock = threading.Lock()

    def watch(self, pruner: Pruner) -> None:
        with self._lock:
            self._pruners.add(pruner)

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        with self._lock:
            pruners = list(self._pruners)
        if not pruners:
            return
        rows = CounterMetricFamily(
            "mppo_retention_rows_pruned", "Rows the pruner deleted, per table.", labels=["table"]
        )
        cycles = CounterMetricFamily(
            "mppo_retention_cycles", "Complete pruning cycles (nothing left past its window)."
        )
        failed = CounterMetricFamily(
            "mppo_retention_failed_rounds", "Pruning rounds that failed (retried with back-off)."
        )
        table_bytes = GaugeMetricFamily(
            "mppo_retention_table_bytes",
            "On-disk size of each pruned table with its indexes and TOAST.",
            labels=["table"],
        )
        stream_bytes = GaugeMetricFamily(
            "mppo_stream_bytes", "Bytes each MPPO stream holds.", labels=["stream"]
        )
        stream_max = GaugeMetricFamily(
            "mppo_stream_max_bytes", "Byte limit of each MPPO stream (0: none).", labels=["stream"]
        )
        for pruner in pruners:
            values = pruner.metrics()
            for table, count in values["rows_pruned_total"].items():
                rows.add_metric([table], count)
            cycles.add_metric([], values["cycles_total"])
            failed.add_metric([], values["failed_rounds_total"])
            for table, size in values["table_bytes"].items():
                table_bytes.add_metric([table], size)
            for stream, size in values["stream_bytes"].items():
                stream_bytes.add_metric([stream], size)
            for stream, size in values["stream_max_bytes"].items():
                stream_max.add_metric([stream], size)
        yield from (rows, cycles, failed, table_bytes, stream_bytes, stream_max)


_PRUNERS = _PrunerCollector()
REGISTRY.register(_PRUNERS)


def watch_pruner(pruner: Pruner) -> None:
    """Export `pruner`'s counts (rows pruned, table and stream bytes) while it is alive."""
    _PRUNERS.watch(pruner)


# ---------------------------------------------------------------- the endpoint


def metrics_addr(env: Mapping[str, str], process: str) -> str | None:
    """Where `process` serves /metrics (``MPPO_METRICS_ADDR`` or its default), None for off."""
    value = env.get(METRICS_ADDR_VAR, "").strip() or DEFAULT_METRICS_ADDRS.get(process, "")
    if not value or value.lower() in _OFF:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{METRICS_ADDR_VAR}={value!r} is not host:port (or off)")
    return value


def sample_interval(env: Mapping[str, str]) -> float:
    """``MPPO_METRICS_SAMPLE_SECONDS`` (default 15)."""
    from mppo.platform.settings import Env

    return Env(env).number(SAMPLE_SECONDS_VAR, 15.0, minimum=0.05)


@dataclass
class MetricsServer:
    """The /metrics endpoint of this process (a daemon thread; scrapes never touch the loop)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (the free one chosen for port 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(addr: str | None, process: str) -> MetricsServer | None:
    """Serve the default registry at ``http://addr/metrics``; None when off or the port is
    taken (logged: the process still serves its traffic, and Prometheus reports the target
    down, which alerts)."""
    if addr is None:
        logger.info("%s serves no metrics (%s=off)", process, METRICS_ADDR_VAR)
        return None
    host, _, port = addr.rpartition(":")
    try:
        server, thread = start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        logger.error("%s: metrics cannot listen on %s (%s); none served", process, addr, exc)
        return None
    served = MetricsServer(server, thread)
    logger.info(
        "%s serves metrics on http://%s:%s/metrics",
        process,
        host,
        served.port,
        extra={"metrics_port": served.port},
    )
    return served
