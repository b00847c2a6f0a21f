"""Structured JSON logging on stdout, one object per line, configured once per process.

Field names follow the Elastic Common Schema, so Filebeat ships the lines to Elasticsearch
with no ingest pipeline (deploy/filebeat/filebeat.yml): ``@timestamp``, ``log.level``,
``log.logger``, ``message``, ``service.name`` (``mppo-<service>``, as in the traces),
``trace.id`` / ``span.id`` (the current OpenTelemetry span: the request's trace, see
mppo.platform.telemetry), ``error.type`` / ``error.message`` / ``error.stack_trace`` and
``ecs.version``. The earlier names stay beside them with their meaning (``time``, ``level``,
``service`` as the bare service name, ``logger``, ``trace_id``, ``span_id``, ``exception``);
Filebeat drops those before indexing (``service`` would collide with ECS's ``service``
object).

Ids that matter (group, member, payment, order) are set with `bind_ids()` and appear on every
line logged in that task; `extra=` fields are added as they are. Personal data (e-mail,
phone) must never be passed to a logger.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

ECS_VERSION = "8.11.0"

_ids: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "mppo_log_ids", default=None
)
_RESERVED = set(vars(logging.makeLogRecord({})))


@contextmanager
def bind_ids(**ids: str) -> Iterator[None]:
    """Attach ids (e.g. group_id=…) to every log line written inside the block."""
    token = _ids.set({**(_ids.get() or {}), **{k: v for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _ids.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ECS fields, the earlier names, ids, trace, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        self._service_name = f"mppo-{service}"

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON line."""
        moment = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        level = record.levelname
        line: dict[str, Any] = {
            "@timestamp": moment.replace("+00:00", "Z"),
            "log.level": level.lower(),
            "message": record.getMessage(),
            "service.name": self._service_name,
            "log.logger": record.name,
            "ecs.version": ECS_VERSION,
            "time": moment,
            "level": level,
            "service": self._service,
            "logger": record.name,
        }
        line.update(_ids.get() or {})
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            trace_id = format(span_context.trace_id, "032x")
            span_id = format(span_context.span_id, "016x")
            line["trace.id"] = line["trace_id"] = trace_id
            line["span.id"] = line["span_id"] = span_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            stack = self.formatException(record.exc_info)
            line["exception"] = line["error.stack_trace"] = stack
            error = record.exc_info[1]
            if error is not None:
                line["error.type"] = type(error).__qualname__
                line["error.message"] = str(error)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON lines; call once per process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("nats", "asyncio", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
