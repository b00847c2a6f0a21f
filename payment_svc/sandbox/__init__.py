"""The sandbox provider: a local, Stripe-compatible payment service provider (PSP).

Run it with ``python -m payment_svc.sandbox`` (``mppo dev up`` does). It serves the subset of
the Stripe API our Stripe adapter uses, so the default configuration runs the real ``stripe``
SDK code path against it, and it keeps its own ledger of holds, captures, voids and refunds.

Stripe-compatible API (``Authorization: Bearer <MPPO_SANDBOX_API_KEY>``, form-encoded bodies,
``Idempotency-Key`` honoured on every POST):
    POST /v1/checkout/sessions, GET /v1/checkout/sessions/{id}, POST .../{id}/expire
    GET /v1/payment_intents/{id} (``expand[]=latest_charge``),
    POST /v1/payment_intents/{id}/capture, POST /v1/payment_intents/{id}/cancel
    POST /v1/refunds

Hosted checkout page: ``GET /checkout/{session_id}`` (amount, merchant, description, card
field, Pay and Decline). Its form posts to ``POST /checkout/{session_id}/pay`` with fields
``card_number`` and ``action`` (``pay`` or ``decline``); send ``Accept: application/json`` to
get JSON instead of HTML (tests, bench).

Test cards (also listed on the page and in docs/payment.md):
    4242424242424242  authorizes; capture succeeds
    4000000000000002  declined (``card_declined``)
    4000000000000341  authorizes; capture is declined later

Webhooks: every state change creates a Stripe event, signed ``Stripe-Signature:
t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`` and POSTed to
``MPPO_SANDBOX_WEBHOOK_URL`` with bounded retries until a 2xx.

Test control (no auth; the sandbox is a dev/test tool that listens on loopback):
    GET  /_sandbox/ledger?group_id=&payment_intent=   ledger entries and totals
    GET  /_sandbox/events?payment_intent=&type=       events with delivery status and body
    GET  /_sandbox/events/{id}/signed                 body + a freshly signed header
    POST /_sandbox/events/{id}/resend                 deliver again now
    GET|POST /_sandbox/faults                         fail, drop, delay, duplicate, hold
    POST /_sandbox/webhooks/release                   deliver held events (in order / reverse)
    GET  /healthz

State lives in a JSON-lines journal (``MPPO_SANDBOX_STATE_FILE``), replayed at start, so a
restart keeps sessions, payments, the ledger and undelivered webhooks.
"""
