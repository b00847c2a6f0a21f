"""The order service's own metrics (mppo.platform.metrics has the platform's).

* ``mppo_order_saga_step_duration_seconds{step,outcome}`` — each saga step: its external call
  (merchant or payment service) and the commit that records it; ``outcome`` is ``ok``,
  ``failed`` (a refusal: the order starts compensating) or ``retry`` (transient, tried again);
* ``mppo_order_saga_finished_total{status}`` — orders the saga brought to CONFIRMED or FAILED.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from mppo.platform.metrics import STEP_BUCKETS

SAGA_STEP_SECONDS = Histogram(
    "mppo_order_saga_step_duration_seconds",
    "Duration of one order saga step (its external call and the commit recording it).",
    ["step", "outcome"],
    buckets=STEP_BUCKETS,
)
SAGA_FINISHED = Counter(
    "mppo_order_saga_finished_total",
    "Orders the saga finished, by final status (CONFIRMED or FAILED).",
    ["status"],
)


def observe_step(step: str, outcome: str, seconds: float) -> None:
    """One saga step took `seconds`."""
    SAGA_STEP_SECONDS.labels(step, outcome).observe(seconds)
