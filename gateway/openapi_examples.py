"""Example request bodies for `/openapi.json`, one per request message a REST body carries.

Each is valid against its schema (tests/unit/gateway/test_errors_openapi.py checks that, and
that every public body has one) and is accepted by the real services
(tests/e2e/test_typed_sdk.py posts each: the one that creates something
succeeds, the ones naming a group that does not exist are answered 404, never 400). Ids are
shaped like the ones the services issue; carts use the sandbox merchant's catalogue. The
createGroup example sets no deadline (the service's default, 24 hours after creation, applies):
the document is the same bytes on every edge and every day, so a fixed date would soon lie in
the past or beyond the hold window, and the example is meant to be sent as it stands.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

HOST: Json = {"displayName": "Hana", "email": "hana@example.com"}
GUESTS: list[Json] = [
    {"displayName": "Ali", "email": "ali@example.com"},
    {"displayName": "Bo", "email": "bo@example.com", "provider": "PROVIDER_SANDBOX"},
]
MEMBER_ID = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"

#: request message full name -> example JSON body
EXAMPLES: dict[str, Any] = {
    "mppo.group.v1.CreateGroupRequest": {
        "merchantId": "sandbox-merchant",
        "currencyCode": "USD",
        "items": [
            {
                "lineId": "l1",
                "sku": "PIZZA-MARGHERITA",
                "name": "Margherita pizza",
                "quantity": 2,
                "unitPriceMinor": "1200",
            },
            {
                "lineId": "l2",
                "sku": "GARLIC-BREAD",
                "name": "Garlic bread",
                "quantity": 1,
                "unitPriceMinor": "550",
            },
        ],
        "feesMinor": "0",
        "taxMinor": "101",
        "tipMinor": "0",
        "splitMode": "SPLIT_MODE_EQUAL",
        "fallbackPolicy": "FALLBACK_POLICY_CANCEL",
        "host": HOST,
        "members": GUESTS[:1],
    },
    "mppo.group.v1.AddMembersRequest": {"members": GUESTS[1:]},
    "mppo.group.v1.JoinGroupRequest": {
        "inviteToken": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
        "provider": "PROVIDER_SANDBOX",
    },
    "mppo.group.v1.UpdateSplitRequest": {
        "splitMode": "SPLIT_MODE_CUSTOM",
        "shares": [{"memberId": MEMBER_ID, "shareSpec": {"amountMinor": "1500"}}],
        "expectedVersion": "3",
    },
    "mppo.group.v1.OpenGroupRequest": {},
    "mppo.group.v1.ForceFinalizeRequest": {},
    "mppo.group.v1.CancelGroupRequest": {"reason": "Plans changed"},
    "mppo.group.v1.RetryPaymentRequest": {},
}

#: an example raw webhook body (the provider's own JSON, signed in its headers)
WEBHOOK_EXAMPLE = (
    '{"id": "evt_1", "type": "payment_intent.amount_capturable_updated",'
    ' "data": {"object": {"id": "pi_1", "status": "requires_capture"}}}'
)
