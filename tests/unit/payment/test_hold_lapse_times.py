"""When a hold lapses, as the payment learns it over time: a webhook announces the hold
without the provider's lapse time (the configured window applies), the next re-read brings
the provider's own (Stripe's ``capture_before``), and a lapse time never moves later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payment_svc.domain.model import Observation, Payment, PaymentStatus

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def authorized(lapses_at: datetime | None = None) -> Observation:
    return Observation(
        status=PaymentStatus.AUTHORIZED,
        amount_authorized_minor=500,
        authorization_expires_at=lapses_at,
    )


def test_the_provider_s_lapse_time_read_later_replaces_the_window() -> None:
    payment = Payment("p1", "g1", "m1", 1, 500, "USD", "stripe")
    assert payment.observe(
        authorized(), reason="webhook", actor="provider:stripe", hold_until=NOW + timedelta(days=7)
    )
    assert payment.authorization_expires_at == NOW + timedelta(days=7)
    capture_before = NOW + timedelta(days=6, hours=23)
    # the re-read changes no status, but the lapse time is news worth saving
    assert payment.observe(
        authorized(capture_before),
        reason="provider re-read",
        actor="reconciler",
        hold_until=NOW + timedelta(days=8),
    )
    assert payment.authorization_expires_at == capture_before
    assert payment.status is PaymentStatus.AUTHORIZED
    assert [e.kind for e in payment.events] == ["succeeded"]
    # a later re-read (a later window, the same capture_before) changes nothing
    assert not payment.observe(
        authorized(capture_before),
        reason="provider re-read",
        actor="reconciler",
        hold_until=NOW + timedelta(days=9),
    )
    assert payment.authorization_expires_at == capture_before


def test_a_provider_lapse_time_beyond_the_window_does_not_extend_the_hold() -> None:
    # PayPal: an authorization stays valid 29 days, but is honored for 3
    payment = Payment("p2", "g1", "m2", 1, 500, "USD", "paypal")
    payment.observe(
        authorized(NOW + timedelta(days=29)),
        reason="provider re-read",
        actor="reconciler",
        hold_until=NOW + timedelta(days=3),
    )
    assert payment.authorization_expires_at == NOW + timedelta(days=3)
