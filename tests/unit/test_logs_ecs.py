"""Log lines are JSON on stdout with Elastic Common Schema field names (so Filebeat ships them
without an ingest pipeline), the earlier fields keeping their meaning, and the current trace's
ids on every line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mppo.platform.logs import ECS_VERSION, JsonFormatter, bind_ids

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("payment"))
    log = logging.getLogger("tests.ecs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_ecs_fields_beside_the_earlier_ones(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    with bind_ids(payment_id="p-1"):
        log.warning("hold of %s lapses soon", "p-1", extra={"expires_in": 30})
    (line,) = parsed(stream)
    assert str(line["@timestamp"]).endswith("Z")
    assert line["log.level"] == "warning"
    assert line["log.logger"] == "tests.ecs"
    assert line["message"] == "hold of p-1 lapses soon"
    assert line["service.name"] == "mppo-payment"
    assert line["ecs.version"] == ECS_VERSION
    # the earlier names, same meaning
    assert line["level"] == "WARNING"
    assert line["service"] == "payment"
    assert line["logger"] == "tests.ecs"
    assert str(line["time"]).startswith(str(line["@timestamp"])[:23])
    assert line["payment_id"] == "p-1"
    assert line["expires_in"] == 30
    assert "trace.id" not in line  # no trace, no ids


def test_every_line_carries_the_current_trace(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    remote = SpanContext(TRACE, SPAN, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(remote)):
        log.info("inside a request")
    (line,) = parsed(stream)
    assert line["trace.id"] == line["trace_id"] == format(TRACE, "032x")
    assert line["span.id"] == line["span_id"] == format(SPAN, "016x")


def test_errors_are_ecs_error_fields(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    try:
        raise ValueError("bad amount")
    except ValueError:
        log.exception("capture failed")
    (line,) = parsed(stream)
    assert line["error.type"] == "ValueError"
    assert line["error.message"] == "bad amount"
    assert "Traceback" in str(line["error.stack_trace"])
    assert line["exception"] == line["error.stack_trace"]


def test_a_configured_process_logs_json_to_stdout() -> None:
    script = (
        "import logging; from mppo.platform.logs import configure_logging;"
        "configure_logging('group'); logging.getLogger('x').info('hello')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr == ""
    (line,) = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert line["message"] == "hello"
    assert line["service.name"] == "mppo-group"
