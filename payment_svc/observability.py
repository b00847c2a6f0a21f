"""The payment service's own metrics (mppo.platform.metrics has the platform's).

* ``mppo_webhooks_received_total{provider}`` — provider webhooks received (the payment
  Deployment's autoscaler scales on their rate, deploy/k8s);
* ``mppo_payment_webhook_verification_failures_total{provider}`` — webhooks refused because
  their signature, timestamp or shape did not verify (counted where they are refused);
* ``mppo_payment_holds_outstanding``, ``mppo_payment_oldest_hold_age_seconds``,
  ``mppo_payment_hold_soonest_expiry_seconds`` — money authorized on payers' cards and neither
  captured nor released yet, how long the oldest has been held and how long until the first
  one lapses at the provider (sampled with the platform's gauges).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mppo.platform.metrics import Sample

WEBHOOKS_RECEIVED = Counter(
    "mppo_webhooks_received_total",
    "Provider webhooks this process received, verified or not (the payment autoscaler's "
    "load signal, deploy/k8s).",
    ["provider"],
)
WEBHOOK_VERIFICATION_FAILURES = Counter(
    "mppo_payment_webhook_verification_failures_total",
    "Provider webhooks refused because their signature, timestamp or shape did not verify.",
    ["provider"],
)
HOLDS_OUTSTANDING = Gauge(
    "mppo_payment_holds_outstanding",
    "Payments authorized and neither captured nor released: money held on a card (sampled).",
)
OLDEST_HOLD_AGE = Gauge(
    "mppo_payment_oldest_hold_age_seconds",
    "How long the oldest outstanding hold has been authorized, 0 when none (sampled).",
)
SOONEST_EXPIRY = Gauge(
    "mppo_payment_hold_soonest_expiry_seconds",
    "Seconds until the first outstanding hold lapses at its provider (negative: lapsed and "
    "not yet reconciled); NaN when no hold has a known expiry (sampled).",
)

#: one row: how many holds, the oldest authorization (its status history), the soonest expiry
_HOLDS_SQL = text(
    "SELECT count(*),"
    " COALESCE(EXTRACT(EPOCH FROM now() - min(COALESCE(h.authorized_at, p.created_at))), 0),"
    " EXTRACT(EPOCH FROM min(p.authorization_expires_at) - now())"
    " FROM payments p LEFT JOIN LATERAL ("
    "   SELECT max(changed_at) AS authorized_at FROM payment_status_history"
    "   WHERE payment_id = p.payment_id AND to_status = 'authorized'"
    " ) h ON true"
    " WHERE p.status = 'authorized'"
)


def holds_sample(engine: AsyncEngine) -> Sample:
    """Reads the outstanding holds into their gauges."""

    async def sample() -> None:
        async with engine.connect() as conn:
            count, oldest, soonest = (await conn.execute(_HOLDS_SQL)).one()
        HOLDS_OUTSTANDING.set(int(count))
        OLDEST_HOLD_AGE.set(max(0.0, float(oldest)))
        SOONEST_EXPIRY.set(float("nan") if soonest is None else float(soonest))

    return sample
