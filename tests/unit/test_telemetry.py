"""Tracing without an exporter costs no span and no instrumentation, yet the request's trace id
still flows (traceparent in, traceparent out, ids in the logs); with one, background polls
are not exported as traces of their own."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from mppo.platform import telemetry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture
def not_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(telemetry._state, "exporting", False)


def test_traceparent_round_trip() -> None:
    remote = telemetry.parse_traceparent(f"00-{TRACE}-{SPAN}-01")
    assert remote is not None
    assert remote.trace_id == int(TRACE, 16)
    assert remote.span_id == int(SPAN, 16)
    assert remote.is_remote
    assert remote.trace_flags.sampled
    assert telemetry.traceparent(remote) == f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE[:-1]}x-{SPAN}-01",
        f"00-{TRACE}-{SPAN[:8]}-01",
    ],
)
def test_malformed_traceparents_are_ignored(bad: str) -> None:
    assert telemetry.parse_traceparent(bad) is None


def test_without_an_exporter_no_interceptor_runs(not_exporting: None) -> None:
    assert telemetry.server_interceptors() == []
    assert telemetry.client_interceptors() == []
    assert telemetry.http_middleware() is None


def test_a_call_continues_the_callers_trace_and_passes_it_on(not_exporting: None) -> None:
    assert not trace.get_current_span().get_span_context().is_valid
    token = telemetry.continue_trace(
        (("x-request-id", "r1"), ("traceparent", f"00-{TRACE}-{SPAN}-01"))
    )
    assert token is not None
    try:
        current = trace.get_current_span().get_span_context()
        assert format(current.trace_id, "032x") == TRACE
        # what this service sends its peers: the same trace
        assert telemetry.trace_metadata() == (("traceparent", f"00-{TRACE}-{SPAN}-01"),)
    finally:
        telemetry.end_trace(token)
    assert not trace.get_current_span().get_span_context().is_valid
    assert telemetry.trace_metadata() == ()


def test_a_call_without_trace_context_changes_nothing(not_exporting: None) -> None:
    assert telemetry.continue_trace((("x-request-id", "r1"),)) is None
    assert telemetry.continue_trace((("traceparent", "nonsense"),)) is None
    assert telemetry.continue_trace(None) is None


def test_exporting_the_interceptor_sends_the_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(telemetry._state, "exporting", True)
    token = telemetry.use_remote(telemetry.parse_traceparent(f"00-{TRACE}-{SPAN}-01"))  # type: ignore[arg-type]
    try:
        assert telemetry.trace_metadata() == ()  # the client interceptor adds its own span's
    finally:
        telemetry.end_trace(token)


def _parent(sampled: bool = True) -> Context:
    span_context = SpanContext(
        int(TRACE, 16), int(SPAN, 16), is_remote=True, trace_flags=TraceFlags(int(sampled))
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


@pytest.mark.parametrize(
    ("name", "kind", "parent", "sampled"),
    [
        ("SELECT", SpanKind.CLIENT, None, False),  # a worker polling Postgres
        ("EVALSHA", SpanKind.CLIENT, None, False),  # ... or Redis
        ("SELECT", SpanKind.CLIENT, _parent(), True),  # the same query inside a request
        ("/mppo.payment.v1.PaymentService/CapturePayment", SpanKind.CLIENT, None, True),
        ("/mppo.group.v1.GroupService/GetGroup", SpanKind.SERVER, None, True),
        ("consume group.created", SpanKind.CONSUMER, None, True),
    ],
)
def test_background_polls_are_not_exported(
    name: str, kind: SpanKind, parent: Context | None, sampled: bool
) -> None:
    sampler = telemetry.QuietBackground(ALWAYS_ON)
    decision = sampler.should_sample(parent, int(TRACE, 16), name, kind).decision
    assert (decision is Decision.RECORD_AND_SAMPLE) is sampled


def test_platform_loops_run_with_instrumentation_suppressed() -> None:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    quiet = telemetry.untraced()
    assert quiet.run(get_value, _SUPPRESS_INSTRUMENTATION_KEY) is True
    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None
