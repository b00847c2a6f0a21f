"""Retention: nothing the platform writes grows without bound (docs/retention.md).

:class:`RetentionSettings` holds every window (``MPPO_RETENTION_*``, docs/conventions.md) and
refuses, at start, settings that would let a duplicate through (an inbox window not longer
than the stream's ``max_age`` + the JetStream duplicate window) or break a promise made to
callers (idempotency keys for less than 24 h in prod).

:class:`Pruner` is the one :class:`~mppo.platform.worker.LoopWorker` the runtime runs in every
service process, next to the outbox relay. Each round deletes at most ``batch`` rows per
:class:`PruneTarget`, each batch in its own short transaction whose rows are claimed with
``FOR UPDATE SKIP LOCKED`` — replicas share the work and never wait for one another, and no
lock is held longer than one batch. Platform targets (:func:`platform_targets`):

* ``outbox`` rows **published** longer ago than the outbox window (unpublished rows never);
* ``inbox`` rows processed longer ago than the inbox window;
* ``idempotency_keys`` **completed** longer ago than the idempotency window.

A service adds its own (e.g. the payment service's provider webhook records) through
``Parts.prune``. Business records are never targets: they are archived or partitioned by an
operator (docs/retention.md).

Counts are kept on the worker for export (:meth:`Pruner.metrics`: rows pruned per table, table
and stream sizes) and logged once per cycle; a stream above ``alert_ratio`` of its byte limit
is logged as a warning every check, before publishes start being refused.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mppo.platform.config import ConfigError
from mppo.platform.environment import ENV_VAR, environment
from mppo.platform.messaging import (
    DUPLICATE_WINDOW_SECONDS,
    STREAM_MAX_AGE_SECONDS,
    STREAMS,
    StreamLimits,
    stream_name,
)
from mppo.platform.settings import Env
from mppo.platform.worker import LoopWorker

logger = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 24 * HOUR
GIB = 1 << 30
MIB = 1 << 20

INTERVAL_VAR = "MPPO_RETENTION_INTERVAL_SECONDS"
BATCH_VAR = "MPPO_RETENTION_BATCH"
OUTBOX_VAR = "MPPO_RETENTION_OUTBOX_SECONDS"
INBOX_VAR = "MPPO_RETENTION_INBOX_SECONDS"
IDEMPOTENCY_VAR = "MPPO_RETENTION_IDEMPOTENCY_SECONDS"
WEBHOOKS_VAR = "MPPO_RETENTION_WEBHOOKS_SECONDS"
STREAM_MAX_AGE_VAR = "MPPO_RETENTION_STREAM_MAX_AGE_SECONDS"
DUPLICATE_WINDOW_VAR = "MPPO_RETENTION_DUPLICATE_WINDOW_SECONDS"
STREAM_MAX_BYTES_VAR = "MPPO_RETENTION_STREAM_MAX_BYTES"
DLQ_MAX_BYTES_VAR = "MPPO_RETENTION_DLQ_MAX_BYTES"
ALERT_RATIO_VAR = "MPPO_RETENTION_STREAM_ALERT_RATIO"

#: what a caller may rely on in prod: a retry with the same key within 24 h gets the first
#: result (Stripe's promise, which our clients are written against)
IDEMPOTENCY_FLOOR_SECONDS = DAY
#: providers redeliver a webhook for up to 3 days (Stripe); its event id is our dedupe key
WEBHOOKS_FLOOR_SECONDS = 7 * DAY
#: byte limits per MPPO_ENV: (each event stream, the dead-letter stream); 0 = none. NATS
#: reserves every byte limit against the server's storage when the stream is created, so the
#: test server (hundreds of prefixed streams in one session) gets none and dev a small one.
DEFAULT_BYTES: Mapping[str, tuple[int, int]] = {
    "prod": (4 * GIB, 1 * GIB),
    "dev": (1 * GIB, 256 * MIB),
    "test": (0, 0),
}
_SMALLEST_WINDOW = 0.1
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class RetentionSettings:
    """Every retention window and stream limit (defaults: prod; see :meth:`from_env`)."""

    #: sent outbox rows: an audit trail of what was published, when, after how many attempts
    outbox: timedelta = timedelta(days=3)
    #: inbox rows: longer than any redelivery or replay can reach (> max_age + dup window)
    inbox: timedelta = timedelta(days=14)
    #: completed idempotency keys: a retry within this window returns the first result
    idempotency: timedelta = timedelta(hours=24)
    #: provider webhook records (payment service): reconciliation and disputes
    webhooks: timedelta = timedelta(days=180)
    streams: StreamLimits = field(
        default_factory=lambda: StreamLimits(
            max_age=STREAM_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_bytes=DEFAULT_BYTES["prod"][0],
            dlq_max_bytes=DEFAULT_BYTES["prod"][1],
        )
    )
    #: share of a stream's byte limit above which every check logs a warning
    alert_ratio: float = 0.8
    #: seconds between pruning cycles when nothing is left to prune
    interval: float = 60.0
    #: rows deleted per table per transaction
    batch: int = 500

    @classmethod
    def from_env(cls, source: Mapping[str, str] | None = None) -> RetentionSettings:
        """Read ``MPPO_RETENTION_*``; ConfigError naming the variables for a bad or unsafe
        combination."""
        values = os.environ if source is None else source
        env = Env(values)
        tier = environment(values)
        production = tier == "prod"
        default_bytes, default_dlq_bytes = DEFAULT_BYTES[tier]

        def window(name: str, default: float) -> float:
            return env.number(name, default, minimum=_SMALLEST_WINDOW)

        max_age = window(STREAM_MAX_AGE_VAR, STREAM_MAX_AGE_SECONDS)
        duplicate = window(DUPLICATE_WINDOW_VAR, DUPLICATE_WINDOW_SECONDS)
        if duplicate > max_age:
            raise ConfigError(
                f"{DUPLICATE_WINDOW_VAR} ({duplicate:g} s) must not be longer than "
                f"{STREAM_MAX_AGE_VAR} ({max_age:g} s): JetStream refuses such a stream"
            )
        inbox = window(INBOX_VAR, 14 * DAY)
        if inbox <= max_age + duplicate:
            raise ConfigError(
                f"{INBOX_VAR} ({inbox:g} s) must be longer than {STREAM_MAX_AGE_VAR} "
                f"({max_age:g} s) + {DUPLICATE_WINDOW_VAR} ({duplicate:g} s): an event still "
                "in the stream could be redelivered after its inbox row is gone and be applied "
                "twice (docs/retention.md)"
            )
        idempotency = window(IDEMPOTENCY_VAR, DAY)
        if production and idempotency < IDEMPOTENCY_FLOOR_SECONDS:
            raise ConfigError(
                f"{IDEMPOTENCY_VAR} ({idempotency:g} s) must be at least "
                f"{IDEMPOTENCY_FLOOR_SECONDS:g} (24 h) when {ENV_VAR}={tier}: callers may "
                "retry with the same key for 24 hours and must get the first result"
            )
        webhooks = window(WEBHOOKS_VAR, 180 * DAY)
        if production and webhooks < WEBHOOKS_FLOOR_SECONDS:
            raise ConfigError(
                f"{WEBHOOKS_VAR} ({webhooks:g} s) must be at least {WEBHOOKS_FLOOR_SECONDS:g} "
                f"(7 days) when {ENV_VAR}={tier}: providers redeliver webhooks for days and "
                "the record is what recognises a redelivery"
            )
        return cls(
            outbox=timedelta(seconds=window(OUTBOX_VAR, 3 * DAY)),
            inbox=timedelta(seconds=inbox),
            idempotency=timedelta(seconds=idempotency),
            webhooks=timedelta(seconds=webhooks),
            streams=StreamLimits(
                max_age=max_age,
                duplicate_window=duplicate,
                max_bytes=env.integer(STREAM_MAX_BYTES_VAR, default_bytes, minimum=0),
                dlq_max_bytes=env.integer(DLQ_MAX_BYTES_VAR, default_dlq_bytes, minimum=0),
            ),
            alert_ratio=env.number(ALERT_RATIO_VAR, 0.8, minimum=0.01, maximum=1.0),
            interval=env.number(INTERVAL_VAR, 60.0, minimum=0.01),
            batch=env.integer(BATCH_VAR, 500, minimum=1, maximum=100_000),
        )


@dataclass(frozen=True)
class PruneTarget:
    """Rows of ``table`` whose ``time_column`` is older than ``window`` (and that match the
    optional SQL ``condition``, a constant written in code) are deleted.

    ``time_column`` should be indexed (with ``condition`` as the index's predicate) so that a
    batch reads only the rows it deletes.
    """

    table: str
    time_column: str
    window: timedelta
    condition: str = ""

    def __post_init__(self) -> None:
        for name in (self.table, self.time_column):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")
        if self.window <= timedelta(0):
            raise ValueError(f"{self.table}: the retention window must be positive")

    def delete_batch(self) -> Any:
        """One bounded, SKIP LOCKED batch (binds ``window`` and ``batch``)."""
        extra = f" AND ({self.condition})" if self.condition else ""
        return text(
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {self.table}"
            f" WHERE {self.time_column} < now() - CAST(:window AS interval){extra}"
            f" ORDER BY {self.time_column} LIMIT :batch FOR UPDATE SKIP LOCKED))"
        )


def platform_targets(settings: RetentionSettings) -> list[PruneTarget]:
    """The platform tables every service database holds (mppo.platform.schema)."""
    return [
        PruneTarget("outbox", "published_at", settings.outbox, "published_at IS NOT NULL"),
        PruneTarget("inbox", "processed_at", settings.inbox),
        PruneTarget("idempotency_keys", "created_at", settings.idempotency, "status = 'completed'"),
    ]


class Pruner(LoopWorker):
    """Deletes rows past their window in bounded batches; safe to run in every replica."""

    name = "pruner"

    def __init__(
        self,
        engine: AsyncEngine,
        targets: Sequence[PruneTarget],
        *,
        js: JetStreamContext | None = None,
        prefix: str = "",
        limits: StreamLimits | None = None,
        alert_ratio: float = 0.8,
        batch: int = 500,
        interval: float = 60.0,
        pause: float = 0.05,
        lock_timeout: float = 2.0,
        statement_timeout: float = 30.0,
    ) -> None:
        super().__init__(poll_interval=interval, max_backoff=max(interval, 30.0))
        tables = [t.table for t in targets]
        if len(set(tables)) != len(tables):
            raise ValueError(f"one prune target per table: {tables}")
        self._engine = engine
        self._targets = list(targets)
        self._js = js
        self._prefix = prefix
        self._limits = limits
        self._alert_ratio = alert_ratio
        self._batch = batch
        self._pause = pause
        self._timeouts = {
            "lock_timeout": f"{int(lock_timeout * 1000)}ms",
            "statement_timeout": f"{int(statement_timeout * 1000)}ms",
        }
        self._check_every = interval
        self._next_check = 0.0
        self._cycle: Counter[str] = Counter()
        #: rows deleted per table since start (export as a counter)
        self.pruned: Counter[str] = Counter()
        #: rows deleted per table in the last complete cycle
        self.last_cycle: dict[str, int] = {}
        #: complete cycles (every target had nothing more to delete) and failed rounds
        self.cycles = 0
        self.failed_rounds = 0
        #: on-disk size of each target table with its indexes and TOAST (bytes)
        self.table_bytes: dict[str, int] = {}
        #: bytes held by each MPPO stream, and its byte limit (0 = none)
        self.stream_bytes: dict[str, int] = {}
        self.stream_max_bytes: dict[str, int] = {}

    @classmethod
    def for_service(
        cls,
        engine: AsyncEngine,
        settings: RetentionSettings,
        extra: Sequence[PruneTarget] = (),
        *,
        js: JetStreamContext | None = None,
        prefix: str = "",
    ) -> Pruner:
        """The pruner the runtime runs: the platform tables plus the service's own targets."""
        return cls(
            engine,
            [*platform_targets(settings), *extra],
            js=js,
            prefix=prefix,
            limits=settings.streams,
            alert_ratio=settings.alert_ratio,
            batch=settings.batch,
            interval=settings.interval,
        )

    @property
    def targets(self) -> list[PruneTarget]:
        """What this pruner deletes from."""
        return list(self._targets)

    def metrics(self) -> dict[str, Any]:
        """Everything counted, for an exporter (names are stable)."""
        return {
            "rows_pruned_total": dict(self.pruned),
            "rows_pruned_last_cycle": dict(self.last_cycle),
            "cycles_total": self.cycles,
            "failed_rounds_total": self.failed_rounds,
            "table_bytes": dict(self.table_bytes),
            "stream_bytes": dict(self.stream_bytes),
            "stream_max_bytes": dict(self.stream_max_bytes),
        }

    async def work(self) -> bool:
        """One batch per target; True while any target had a full batch (more is waiting)."""
        try:
            await self._observe()
            busy = False
            for target in self._targets:
                if self.stopping:
                    return False
                deleted = await self.prune_batch(target)
                self._cycle[target.table] += deleted
                busy = busy or deleted >= self._batch
        except Exception:
            self.failed_rounds += 1
            raise
        if busy:
            await self.sleep(self._pause)  # leave the database room between full batches
            return True
        self._end_cycle()
        return False

    async def prune_batch(self, target: PruneTarget) -> int:
        """Delete at most ``batch`` rows of ``target`` past its window; the count deleted."""
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "SELECT set_config('lock_timeout', :lock, true),"
                    " set_config('statement_timeout', :statement, true)"
                ),
                {
                    "lock": self._timeouts["lock_timeout"],
                    "statement": self._timeouts["statement_timeout"],
                },
            )
            result = await conn.execute(
                target.delete_batch(), {"window": target.window, "batch": self._batch}
            )
            deleted = int(result.rowcount or 0)
        self.pruned[target.table] += deleted
        return deleted

    async def prune_all(self) -> dict[str, int]:
        """Prune every target until nothing past its window is left (tests, one-off runs)."""
        total: Counter[str] = Counter()
        for target in self._targets:
            while True:
                deleted = await self.prune_batch(target)
                total[target.table] += deleted
                if deleted < self._batch:
                    break
        return {target.table: total[target.table] for target in self._targets}

    def _end_cycle(self) -> None:
        self.cycles += 1
        self.last_cycle = {t.table: self._cycle[t.table] for t in self._targets}
        self._cycle.clear()
        if any(self.last_cycle.values()):
            logger.info(
                "pruned %s rows: %s",
                sum(self.last_cycle.values()),
                " ".join(f"{table}={count}" for table, count in self.last_cycle.items()),
                extra={"pruned": self.last_cycle},
            )

    async def _observe(self) -> None:
        """At most once per interval: table sizes, stream sizes, and the byte-limit alert."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._check_every
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
                        " WHERE c.relname = ANY(:names) AND c.relkind = 'r'"
                        " AND pg_table_is_visible(c.oid)"
                    ),
                    {"names": [t.table for t in self._targets]},
                )
                self.table_bytes = {str(name): int(size) for name, size in rows.all()}
        except Exception as exc:
            logger.debug("pruner: table sizes unavailable: %r", exc)
        if self._js is not None:
            await self._observe_streams(self._js)

    async def _observe_streams(self, js: JetStreamContext) -> None:
        for base in STREAMS:
            name = stream_name(base, self._prefix)
            try:
                info = await js.stream_info(name)
            except Exception as exc:
                logger.debug("pruner: stream %s unavailable: %r", name, exc)
                continue
            held = int(info.state.bytes or 0)
            limit = int(info.config.max_bytes or 0)
            limit = max(limit, 0)
            self.stream_bytes[name] = held
            self.stream_max_bytes[name] = limit
            if limit and held >= self._alert_ratio * limit:
                logger.warning(
                    "stream %s holds %s of its %s bytes (%.0f%%): at 100%% publishes are "
                    "refused (discard new) and events wait in the outbox; raise %s or "
                    "find the consumer that is behind (docs/retention.md)",
                    name,
                    held,
                    limit,
                    100.0 * held / limit,
                    STREAM_MAX_BYTES_VAR if base != "MPPO_DLQ" else DLQ_MAX_BYTES_VAR,
                    extra={"stream": name, "stream_bytes": held, "stream_max_bytes": limit},
                )
