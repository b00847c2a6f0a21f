"""The Razorpay adapter through the real `razorpay` SDK against the local fake: payment link
checkout, paying on the hosted page, capture, void, refunds, idempotent retries and webhooks."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from payment_svc.adapters.providers.base import (
    CheckoutRequest,
    ProviderError,
    ProviderStatus,
    WebhookRequest,
    WebhookVerificationError,
)
from payment_svc.adapters.providers.razorpay import RazorpayProvider
from payment_svc.simulators.razorpay import RazorpaySimulator, SignedWebhook


def _checkout(amount: int = 150_00, currency: str = "INR") -> CheckoutRequest:
    payment_id = f"pay-{uuid.uuid4().hex[:20]}"
    return CheckoutRequest(
        payment_id=payment_id,
        group_id="grp-1",
        member_id="mem-1",
        attempt=1,
        amount_minor=amount,
        currency_code=currency,
        description="Team dinner share",
        return_url="http://127.0.0.1:9/return",
        idempotency_key=f"checkout:{payment_id}",
    )


async def _pay_on_hosted_page(link_url: str, link_id: str, outcome: str) -> None:
    base = link_url.split("/i/")[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(link_url) as page:
            assert page.status == 200
            assert "Pay" in await page.text()
        async with http.post(f"{base}/_fake/pay/{link_id}", data={"outcome": outcome}) as paid:
            assert paid.status == 200, await paid.text()


def _as_request(webhook: SignedWebhook) -> WebhookRequest:
    return WebhookRequest("POST", "/payments/webhook/razorpay", webhook.headers, webhook.body)


async def test_checkout_pay_refund_partially_then_fully(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    request = _checkout(amount=150_00)
    result = await razorpay_provider.create_checkout(request)
    assert result.provider_payment_id.startswith("plink_")
    link = fake_razorpay.links[result.provider_payment_id]
    assert link["amount"] == 150_00
    assert link["currency"] == "INR"
    assert link["reference_id"] == request.payment_id
    assert link["callback_url"] == request.return_url
    assert (await razorpay_provider.fetch(result.provider_payment_id)).status is (
        ProviderStatus.REQUIRES_ACTION
    )

    await _pay_on_hosted_page(result.payment_link, result.provider_payment_id, "captured")
    state = await razorpay_provider.fetch(result.provider_payment_id)
    assert state.status is ProviderStatus.CAPTURED
    assert state.amount_captured_minor == 150_00

    # capturing an auto-captured payment is a no-op, not an error
    again = await razorpay_provider.capture(result.provider_payment_id, 150_00, "cap-1")
    assert again.status is ProviderStatus.CAPTURED
    assert fake_razorpay.api_calls("POST", "/v1/payments/") == []

    partial = await razorpay_provider.refund(result.provider_payment_id, 50_00, "refund-1")
    assert partial.status is ProviderStatus.PARTIALLY_REFUNDED
    assert partial.amount_refunded_minor == 50_00
    full = await razorpay_provider.refund(result.provider_payment_id, 100_00, "refund-2")
    assert full.status is ProviderStatus.REFUNDED
    assert full.amount_refunded_minor == 150_00
    assert sorted(r["receipt"] for r in fake_razorpay.refunds.values()) == ["refund-1", "refund-2"]


async def test_authorized_payment_is_captured_on_command(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    result = await razorpay_provider.create_checkout(_checkout(amount=99_99))
    await _pay_on_hosted_page(result.payment_link, result.provider_payment_id, "authorized")
    held = await razorpay_provider.fetch(result.provider_payment_id)
    assert held.status is ProviderStatus.AUTHORIZED
    assert held.amount_authorized_minor == 99_99

    with pytest.raises(ProviderError) as no_void:
        await razorpay_provider.void(result.provider_payment_id, "void-1")
    assert no_void.value.code == "void_unsupported"
    assert not no_void.value.retryable

    captured = await razorpay_provider.capture(result.provider_payment_id, 99_99, "cap-1")
    assert captured.status is ProviderStatus.CAPTURED
    (capture_call,) = fake_razorpay.api_calls("POST", "/v1/payments/")
    assert capture_call.body == {"amount": 99_99, "currency": "INR"}


async def test_void_cancels_an_unpaid_link_and_refuses_a_captured_one(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    unpaid = await razorpay_provider.create_checkout(_checkout())
    voided = await razorpay_provider.void(unpaid.provider_payment_id, "void-1")
    assert voided.status is ProviderStatus.VOIDED
    assert fake_razorpay.links[unpaid.provider_payment_id]["status"] == "cancelled"
    # voiding twice is harmless
    assert (await razorpay_provider.void(unpaid.provider_payment_id, "void-1")).status is (
        ProviderStatus.VOIDED
    )

    paid = await razorpay_provider.create_checkout(_checkout())
    fake_razorpay.pay(paid.provider_payment_id, "captured")
    with pytest.raises(ProviderError) as refused:
        await razorpay_provider.void(paid.provider_payment_id, "void-2")
    assert refused.value.code == "already_captured"


async def test_failed_attempt_leaves_the_link_payable(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    result = await razorpay_provider.create_checkout(_checkout())
    await _pay_on_hosted_page(result.payment_link, result.provider_payment_id, "failed")
    state = await razorpay_provider.fetch(result.provider_payment_id)
    assert state.status is ProviderStatus.REQUIRES_ACTION
    assert state.failure_reason == "Payment failed"
    with pytest.raises(ProviderError) as nothing:
        await razorpay_provider.capture(result.provider_payment_id, 150_00, "cap-1")
    assert nothing.value.code == "not_authorized"
    fake_razorpay.pay(result.provider_payment_id, "captured")
    assert (await razorpay_provider.fetch(result.provider_payment_id)).status is (
        ProviderStatus.CAPTURED
    )


async def test_create_retries_a_500_with_the_same_reference_and_makes_one_link(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    request = _checkout()
    fake_razorpay.fail_next(2, "500", match="POST /v1/payment_links")
    result = await razorpay_provider.create_checkout(request)
    creates = fake_razorpay.api_calls("POST", "/v1/payment_links")
    assert len(creates) == 3
    assert {c.body["reference_id"] for c in creates if c.body} == {request.payment_id}
    assert [link["id"] for link in fake_razorpay.links.values()] == [result.provider_payment_id]


async def test_create_whose_answer_is_lost_finds_the_link_instead_of_making_another(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    request = _checkout()
    fake_razorpay.fail_next(1, "lost", match="POST /v1/payment_links")
    result = await razorpay_provider.create_checkout(request)
    assert len(fake_razorpay.links) == 1
    assert result.provider_payment_id in fake_razorpay.links
    lookups = fake_razorpay.api_calls("GET", "/v1/payment_links")
    assert any(c.query.get("reference_id") == request.payment_id for c in lookups)


async def test_refund_whose_answer_is_lost_is_not_repeated(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    result = await razorpay_provider.create_checkout(_checkout(amount=200_00))
    fake_razorpay.pay(result.provider_payment_id, "captured")
    fake_razorpay.fail_next(1, "lost", match="/refund")
    state = await razorpay_provider.refund(result.provider_payment_id, 200_00, "refund-once")
    assert state.status is ProviderStatus.REFUNDED
    assert len(fake_razorpay.refunds) == 1
    posts = [c for c in fake_razorpay.api_calls("POST", "/v1/payments/") if "refund" in c.path]
    assert len(posts) == 1


async def test_429_and_timeouts_are_retried_but_a_400_is_not(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    fake_razorpay.fail_next(1, "429", match="POST /v1/payment_links")
    fake_razorpay.fail_next(1, "timeout", match="POST /v1/payment_links")
    assert (await razorpay_provider.create_checkout(_checkout())).provider_payment_id
    assert len(fake_razorpay.links) == 1

    before = len(fake_razorpay.requests)
    with pytest.raises(ProviderError) as bad:
        await razorpay_provider.create_checkout(_checkout(amount=50))
    assert not bad.value.retryable
    assert bad.value.code == "http_400"
    # one create, one look-up for an earlier link with that reference: no retries
    assert len(fake_razorpay.requests) - before == 2


async def test_persistent_5xx_gives_up_with_a_retryable_error(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    fake_razorpay.fail_next(10, "500")
    with pytest.raises(ProviderError) as down:
        await razorpay_provider.fetch("plink_DoesNotMatter1")
    assert down.value.retryable
    assert len(fake_razorpay.requests) == 4  # the policy's bound


async def test_webhooks_from_the_fake_verify_and_map(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    checkout = _checkout(amount=120_00)
    result = await razorpay_provider.create_checkout(checkout)
    fake_razorpay.pay(result.provider_payment_id, "authorized")
    await razorpay_provider.capture(result.provider_payment_id, 120_00, "cap")
    await razorpay_provider.refund(result.provider_payment_id, 20_00, "ref")
    pay_id = next(iter(fake_razorpay.payments))
    expected = {
        "payment.authorized": (pay_id, ProviderStatus.AUTHORIZED, 120_00),
        "payment.captured": (pay_id, ProviderStatus.CAPTURED, 120_00),
        "payment_link.paid": (result.provider_payment_id, ProviderStatus.CAPTURED, 120_00),
        "refund.processed": (pay_id, ProviderStatus.PARTIALLY_REFUNDED, 20_00),
    }
    assert [w.event for w in fake_razorpay.webhooks] == list(expected)
    seen_ids = set()
    for webhook in fake_razorpay.webhooks:
        request = _as_request(webhook)
        await razorpay_provider.verify_webhook(request)
        event = razorpay_provider.parse_event(request)
        assert event.event_id == webhook.headers["x-razorpay-event-id"]
        assert event.merchant_reference == checkout.payment_id
        assert (event.provider_payment_id, event.status, event.amount_minor) == expected[
            webhook.event
        ]
        seen_ids.add(event.event_id)
    assert len(seen_ids) == 4

    # our payment id travels back in the link's reference_id
    paid = razorpay_provider.parse_event(
        _as_request(fake_razorpay.last_webhook("payment_link.paid"))
    )
    assert paid.raw["payload"]["payment_link"]["entity"]["reference_id"].startswith("pay-")


async def test_webhook_rejections(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    result = await razorpay_provider.create_checkout(_checkout())
    fake_razorpay.pay(result.provider_payment_id, "captured")
    genuine = fake_razorpay.last_webhook("payment.captured")
    await razorpay_provider.verify_webhook(_as_request(genuine))

    tampered = genuine.body.replace(b'"amount": 15000', b'"amount": 15')
    assert tampered != genuine.body
    with pytest.raises(WebhookVerificationError):
        await razorpay_provider.verify_webhook(
            WebhookRequest("POST", "/", genuine.headers, tampered)
        )
    forged = fake_razorpay.signed("payment.captured", secret="not-the-secret", payment={})
    with pytest.raises(WebhookVerificationError):
        await razorpay_provider.verify_webhook(_as_request(forged))
    headers = {k: v for k, v in genuine.headers.items() if k != "x-razorpay-signature"}
    with pytest.raises(WebhookVerificationError, match="missing"):
        await razorpay_provider.verify_webhook(WebhookRequest("POST", "/", headers, genuine.body))


async def test_checkout_ids_are_the_link_and_the_payments_made_on_it(
    razorpay_provider: RazorpayProvider, fake_razorpay: RazorpaySimulator
) -> None:
    """What the payment service asks before it accepts a `pay_…` id first seen in a webhook."""
    result = await razorpay_provider.create_checkout(_checkout())
    link_id = result.provider_payment_id
    assert result.checkout_id == link_id
    assert await razorpay_provider.checkout_ids(link_id) == {link_id}
    await _pay_on_hosted_page(result.payment_link, link_id, "captured")
    ids = await razorpay_provider.checkout_ids(link_id)
    (payment_id,) = ids - {link_id}
    assert payment_id.startswith("pay_")
    other = await razorpay_provider.create_checkout(_checkout())
    assert payment_id not in await razorpay_provider.checkout_ids(other.provider_payment_id)
    # the webhook of that payment names it, and the link it was made on
    paid = razorpay_provider.parse_event(_as_request(fake_razorpay.webhooks[-1]))
    assert set(paid.provider_ids) <= ids
