"""The group service's own metrics (mppo.platform.metrics has the platform's).

* ``mppo_checkout_duration_seconds{outcome}`` — a checkout end to end: from the group's
  creation to the order's outcome as the order service recorded it (the ``occurred_at`` of
  ``order.confirmed`` / ``order.failed``); ``outcome`` is ``confirmed`` or ``failed``. Observed
  when the group service commits that outcome, so once per group whatever the redeliveries.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Histogram

#: seconds: five seconds to two days (members pay when they get to it)
CHECKOUT_BUCKETS = (
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
    172800.0,
)

CHECKOUT_SECONDS = Histogram(
    "mppo_checkout_duration_seconds",
    "Group creation to the order's outcome (order.confirmed or order.failed).",
    ["outcome"],
    buckets=CHECKOUT_BUCKETS,
)


def checkout_finished(outcome: str, created_at: datetime, finished_at: datetime) -> None:
    """One checkout ended with `outcome` (``confirmed`` or ``failed``)."""
    CHECKOUT_SECONDS.labels(outcome).observe(max(0.0, (finished_at - created_at).total_seconds()))
