"""The PayPal adapter over real HTTP against the local fake: order checkout, approval on the
hosted page, authorize, capture, void, refunds, OAuth token caching, idempotent retries with
`PayPal-Request-Id`, and webhook verification through verify-webhook-signature."""

from __future__ import annotations

import json
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
from payment_svc.adapters.providers.paypal import PayPalProvider
from payment_svc.simulators.paypal import PayPalSimulator, SignedWebhook
from tests.integration.payment_providers.conftest import FAST_RETRY, TIMEOUT_S


def _checkout(amount: int = 10_50, currency: str = "USD") -> CheckoutRequest:
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


async def _approve_on_hosted_page(approve_url: str, order_id: str) -> None:
    base = approve_url.split("/checkoutnow")[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(approve_url) as page:
            assert page.status == 200
        async with http.post(f"{base}/_fake/approve/{order_id}", data={"outcome": "approve"}) as r:
            assert r.status == 200, await r.text()


def _as_request(webhook: SignedWebhook) -> WebhookRequest:
    return WebhookRequest("POST", "/payments/webhook/paypal", webhook.headers, webhook.body)


async def test_checkout_approve_authorize_capture_refund(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    request = _checkout(amount=10_50)
    result = await paypal_provider.create_checkout(request)
    order = fake_paypal.orders[result.provider_payment_id]
    assert order["intent"] == "AUTHORIZE"
    unit = order["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "10.50"}
    assert unit["custom_id"] == request.payment_id
    assert result.payment_link.startswith(f"{fake_paypal.base_url}/checkoutnow?token=")
    (create,) = fake_paypal.api_calls("POST", "/v2/checkout/orders")
    assert create.headers["PayPal-Request-Id"] == request.idempotency_key

    assert (await paypal_provider.fetch(result.provider_payment_id)).status is (
        ProviderStatus.REQUIRES_ACTION
    )
    await _approve_on_hosted_page(result.payment_link, result.provider_payment_id)

    held = await paypal_provider.fetch(result.provider_payment_id)  # authorizes the approval
    assert held.status is ProviderStatus.AUTHORIZED
    assert held.amount_authorized_minor == 10_50
    assert held.authorization_expires_at is not None
    # fetching again does not authorize twice
    await paypal_provider.fetch(result.provider_payment_id)
    assert len(fake_paypal.authorizations) == 1

    captured = await paypal_provider.capture(result.provider_payment_id, 10_50, "cap-1")
    assert captured.status is ProviderStatus.CAPTURED
    assert captured.amount_captured_minor == 10_50
    (capture_call,) = fake_paypal.api_calls("POST", "/v2/payments/authorizations/")
    assert capture_call.headers["PayPal-Request-Id"] == "cap-1"
    assert capture_call.body == {
        "amount": {"currency_code": "USD", "value": "10.50"},
        "final_capture": True,
    }

    partial = await paypal_provider.refund(result.provider_payment_id, 50, "ref-1")
    assert partial.status is ProviderStatus.PARTIALLY_REFUNDED
    assert partial.amount_refunded_minor == 50
    full = await paypal_provider.refund(result.provider_payment_id, 10_00, "ref-2")
    assert full.status is ProviderStatus.REFUNDED
    assert full.amount_refunded_minor == 10_50
    # the OAuth token was fetched once and reused for every call
    assert fake_paypal.token_requests == 1


async def test_void_releases_an_authorization(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    never_paid = await paypal_provider.create_checkout(_checkout())
    assert (await paypal_provider.void(never_paid.provider_payment_id, "v-0")).status is (
        ProviderStatus.VOIDED
    )
    assert fake_paypal.api_calls("POST", "/v2/payments/") == []

    result = await paypal_provider.create_checkout(_checkout())
    fake_paypal.approve(result.provider_payment_id)
    assert (await paypal_provider.fetch(result.provider_payment_id)).status is (
        ProviderStatus.AUTHORIZED
    )
    voided = await paypal_provider.void(result.provider_payment_id, "void-1")
    assert voided.status is ProviderStatus.VOIDED
    (auth,) = fake_paypal.authorizations.values()
    assert auth[1]["status"] == "VOIDED"
    with pytest.raises(ProviderError) as late:
        await paypal_provider.capture(result.provider_payment_id, 10_50, "cap-late")
    assert late.value.code == "not_authorized"
    assert not late.value.retryable


async def test_capture_declined_and_authorization_denied_are_failures(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    denied = await paypal_provider.create_checkout(_checkout())
    fake_paypal.approve(denied.provider_payment_id)
    fake_paypal.deny_next_authorization = True
    assert (await paypal_provider.fetch(denied.provider_payment_id)).status is (
        ProviderStatus.FAILED
    )

    declined = await paypal_provider.create_checkout(_checkout())
    fake_paypal.approve(declined.provider_payment_id)
    fake_paypal.decline_next_capture = True
    state = await paypal_provider.capture(declined.provider_payment_id, 10_50, "cap")
    assert state.status is ProviderStatus.FAILED
    assert state.failure_reason == "DECLINED_BY_RISK_FRAUD_FILTERS"


async def test_zero_decimal_currency_goes_out_as_whole_units(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    result = await paypal_provider.create_checkout(_checkout(amount=1050, currency="JPY"))
    amount = fake_paypal.orders[result.provider_payment_id]["purchase_units"][0]["amount"]
    assert amount == {"currency_code": "JPY", "value": "1050"}
    fake_paypal.approve(result.provider_payment_id)
    state = await paypal_provider.capture(result.provider_payment_id, 1050, "cap-jpy")
    assert state.amount_captured_minor == 1050


async def test_create_after_a_500_reuses_the_request_id_and_makes_one_order(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    request = _checkout()
    fake_paypal.fail_next(2, "500", match="POST /v2/checkout/orders")
    result = await paypal_provider.create_checkout(request)
    creates = fake_paypal.api_calls("POST", "/v2/checkout/orders")
    assert len(creates) == 3
    assert {c.headers["PayPal-Request-Id"] for c in creates} == {request.idempotency_key}
    assert list(fake_paypal.orders) == [result.provider_payment_id]


async def test_capture_whose_answer_is_lost_captures_once(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    result = await paypal_provider.create_checkout(_checkout())
    fake_paypal.approve(result.provider_payment_id)
    await paypal_provider.fetch(result.provider_payment_id)
    fake_paypal.fail_next(1, "lost", match="/capture")
    state = await paypal_provider.capture(result.provider_payment_id, 10_50, "cap-lost")
    assert state.status is ProviderStatus.CAPTURED
    assert len(fake_paypal.captures) == 1
    calls = [c for c in fake_paypal.api_calls("POST", "/v2/payments/") if "capture" in c.path]
    assert len(calls) == 2
    assert {c.headers["PayPal-Request-Id"] for c in calls} == {"cap-lost"}


async def test_unprocessable_is_not_retried_and_expired_token_is_renewed(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    result = await paypal_provider.create_checkout(_checkout())
    fake_paypal.approve(result.provider_payment_id)
    await paypal_provider.fetch(result.provider_payment_id)
    (auth_id,) = fake_paypal.authorizations
    fake_paypal.authorizations[auth_id][1]["status"] = "CAPTURED"  # captured behind our back
    before = len(fake_paypal.requests)
    with pytest.raises(ProviderError) as refused:
        await paypal_provider.void(result.provider_payment_id, "void-x")
    assert refused.value.code == "PREVIOUSLY_CAPTURED"
    assert not refused.value.retryable
    assert len(fake_paypal.requests) - before == 2  # one GET, one void: no retries

    fake_paypal.expire_tokens()
    tokens_before = fake_paypal.token_requests
    await paypal_provider.fetch(result.provider_payment_id)
    assert fake_paypal.token_requests == tokens_before + 1


async def test_persistent_outage_gives_up_with_a_retryable_error(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    fake_paypal.fail_next(10, "500")
    with pytest.raises(ProviderError) as down:
        await paypal_provider.fetch("5O190127TN364715T")
    assert down.value.retryable
    assert len(fake_paypal.requests) == FAST_RETRY.attempts


async def test_every_fake_webhook_verifies_and_maps(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    first, second = _checkout(amount=20_00), _checkout(amount=7_00)
    result = await paypal_provider.create_checkout(first)
    order_id = result.provider_payment_id
    fake_paypal.approve(order_id)
    await paypal_provider.capture(order_id, 20_00, "cap")
    await paypal_provider.refund(order_id, 5_00, "ref")
    other = await paypal_provider.create_checkout(second)
    fake_paypal.approve(other.provider_payment_id)
    await paypal_provider.fetch(other.provider_payment_id)  # authorizes
    await paypal_provider.void(other.provider_payment_id, "void")
    (capture_id,) = fake_paypal.captures

    expected = [
        ("CHECKOUT.ORDER.APPROVED", order_id, None, 0),
        ("PAYMENT.AUTHORIZATION.CREATED", order_id, ProviderStatus.AUTHORIZED, 20_00),
        ("PAYMENT.CAPTURE.COMPLETED", order_id, ProviderStatus.CAPTURED, 20_00),
        ("PAYMENT.CAPTURE.REFUNDED", capture_id, ProviderStatus.PARTIALLY_REFUNDED, 5_00),
        ("CHECKOUT.ORDER.APPROVED", other.provider_payment_id, None, 0),
        (
            "PAYMENT.AUTHORIZATION.CREATED",
            other.provider_payment_id,
            ProviderStatus.AUTHORIZED,
            7_00,
        ),
        ("PAYMENT.AUTHORIZATION.VOIDED", other.provider_payment_id, ProviderStatus.VOIDED, 7_00),
    ]
    got = []
    for webhook in fake_paypal.webhooks:
        request = _as_request(webhook)
        await paypal_provider.verify_webhook(request)
        event = paypal_provider.parse_event(request)
        assert event.event_id == json.loads(webhook.body)["id"]
        assert event.merchant_reference in (first.payment_id, second.payment_id)
        got.append((event.event_type, event.provider_payment_id, event.status, event.amount_minor))
    assert got == expected
    # the verify call named our webhook id and passed the PAYPAL-* headers through
    last = fake_paypal.verify_calls[-1]
    assert last["webhook_id"] == fake_paypal.webhook_id
    assert last["auth_algo"] == "SHA256withRSA"
    assert last["transmission_id"] == fake_paypal.webhooks[-1].headers["paypal-transmission-id"]


async def test_webhook_rejections(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    result = await paypal_provider.create_checkout(_checkout())
    fake_paypal.approve(result.provider_payment_id)
    genuine = fake_paypal.last_webhook("CHECKOUT.ORDER.APPROVED")
    await paypal_provider.verify_webhook(_as_request(genuine))

    event = json.loads(genuine.body)
    event["resource"]["id"] = "SOMEOTHERORDER123"
    tampered = json.dumps(event).encode()
    with pytest.raises(WebhookVerificationError, match="FAILURE"):
        await paypal_provider.verify_webhook(WebhookRequest("POST", "/", genuine.headers, tampered))

    other_hook = PayPalProvider(
        client_id=fake_paypal.client_id,
        client_secret=fake_paypal.client_secret,
        webhook_id="WH-SOMEONE-ELSE",
        api_base=fake_paypal.base_url,
        timeout=TIMEOUT_S,
        retry=FAST_RETRY,
    )
    try:
        with pytest.raises(WebhookVerificationError):
            await other_hook.verify_webhook(_as_request(genuine))
    finally:
        await other_hook.close()

    calls_before = len(fake_paypal.verify_calls)
    headers = {k: v for k, v in genuine.headers.items() if k != "paypal-transmission-sig"}
    with pytest.raises(WebhookVerificationError, match="missing"):
        await paypal_provider.verify_webhook(WebhookRequest("POST", "/", headers, genuine.body))
    assert len(fake_paypal.verify_calls) == calls_before  # rejected without asking PayPal

    fake_paypal.fail_next(10, "500", match="verify-webhook-signature")
    with pytest.raises(ProviderError) as unverifiable:
        await paypal_provider.verify_webhook(_as_request(genuine))
    assert unverifiable.value.retryable


async def test_checkout_ids_are_the_order_and_its_authorizations_and_captures(
    paypal_provider: PayPalProvider, fake_paypal: PayPalSimulator
) -> None:
    """What the payment service asks before it accepts an id first seen in a webhook (a
    refund names only its capture)."""
    result = await paypal_provider.create_checkout(_checkout(amount=20_00))
    order_id = result.provider_payment_id
    assert result.checkout_id == order_id
    assert await paypal_provider.checkout_ids(order_id) == {order_id}
    fake_paypal.approve(order_id)
    await paypal_provider.capture(order_id, 20_00, "cap")
    await paypal_provider.refund(order_id, 5_00, "ref")
    (capture_id,) = fake_paypal.captures
    ids = await paypal_provider.checkout_ids(order_id)
    assert capture_id in ids
    assert len(ids) == 3  # order, authorization, capture
    refunded = paypal_provider.parse_event(
        _as_request(fake_paypal.last_webhook("PAYMENT.CAPTURE.REFUNDED"))
    )
    assert refunded.provider_payment_id == capture_id
