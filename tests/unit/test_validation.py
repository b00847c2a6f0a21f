"""Hostile-input checks on protobuf messages (`mppo.platform.validation`): control characters,
lengths, id shapes, bytes sizes and nesting, anywhere in a message, named by proto path."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from google.api import httpbody_pb2
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.descriptors import Catalog
from mppo.common.v1 import cart_pb2
from mppo.group.v1 import group_pb2, group_service_pb2
from mppo.payment.v1 import payment_service_pb2
from mppo.platform.errors import FieldViolation, InvalidArgumentError
from mppo.platform.validation import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_ID,
    MAX_STRING,
    MAX_TEXT,
    MAX_URL,
    UUID_ID_FIELDS,
    check_message,
    rule_for,
    string_problem,
    violations,
)

#: Id fields in our requests whose values we do not issue, so only the generic rule applies:
#: the merchant's id, JWT subjects, client-chosen cart line ids.
OTHER_SHAPED_IDS = {"merchant_id", "user_id", "payer_user_id", "line_id", "line_ids"}


def _group(**overrides: object) -> group_service_pb2.CreateGroupRequest:
    request = group_service_pb2.CreateGroupRequest(
        merchant_id="m-1",
        currency_code="EUR",
        items=[
            cart_pb2.LineItem(line_id="l1", sku="p1", name="Pizza", quantity=2, unit_price_minor=9),
            cart_pb2.LineItem(line_id="l2", sku="SKU/42#b", name="Crème brûlée 🍮", quantity=1),
        ],
        host=group_pb2.MemberInput(display_name="Zoë 山田", email="zoe@example.com"),
        members=[
            group_pb2.MemberInput(display_name="Bo", user_id="auth0|5f1e@x"),
            group_pb2.MemberInput(
                display_name="عمر", share_spec=group_pb2.ShareSpec(line_ids=["l1", "l2"])
            ),
        ],
    )
    for name, value in overrides.items():
        setattr(request, name, value)
    return request


def _fields(found: Sequence[FieldViolation]) -> list[str]:
    return [v.field for v in found]


def test_a_realistic_request_with_any_script_passes() -> None:
    check_message(_group())
    assert violations(_group()) == []


def test_nul_in_a_nested_and_a_repeated_field_names_both() -> None:
    request = _group()
    request.host.display_name = "Ann\x00"
    request.items[1].sku = "p\x002"
    with pytest.raises(InvalidArgumentError) as caught:
        check_message(request)
    error = caught.value
    assert error.reason == "INVALID_INPUT"
    assert _fields(error.violations) == ["items[1].sku", "host.display_name"]
    assert error.violations[1].description == "contains a control character (U+0000) at position 3"
    assert error.message == (
        "invalid items[1].sku: contains a control character (U+0000) at position 1 (and 1 more)"
    )


@pytest.mark.parametrize("char", [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]])
def test_every_control_character_is_refused_in_an_ordinary_field(char: str) -> None:
    request = _group()
    request.members[0].display_name = f"B{char}o"
    assert _fields(violations(request)) == ["members[0].display_name"]


def test_free_text_may_span_lines_but_holds_no_other_controls() -> None:
    ok = group_service_pb2.CancelGroupRequest(reason="Sorry,\r\n\tthe shop closed.")
    assert violations(ok) == []
    for char in "\x00\x07\x0b\x1b\x7f\x85":
        bad = group_service_pb2.CancelGroupRequest(reason=f"line{char}")
        assert _fields(violations(bad)) == ["reason"], repr(char)
    # The same characters are refused where no text spans lines.
    assert _fields(violations(_group(merchant_id="m\n1"))) == ["merchant_id"]
    request = _group()
    request.host.display_name = "Ann\nBcc: evil@example.com"
    assert _fields(violations(request)) == ["host.display_name"]


def test_unpaired_surrogates_are_refused() -> None:
    # Protobuf refuses to store them, but a message built elsewhere may still carry them.
    assert string_problem("a\ud800", rule_for("display_name")) == (
        "contains an unpaired surrogate (U+D800) at position 1"
    )


def test_lengths_are_bounded_by_field_kind() -> None:
    request = _group()
    request.host.display_name = "x" * MAX_STRING
    assert violations(request) == []
    request.host.display_name = "x" * (MAX_STRING + 1)
    (found,) = violations(request)
    assert (found.field, found.description) == (
        "host.display_name",
        "longer than 256 characters (257)",
    )
    request.host.display_name = "ü" * 1_000_000  # the 1 MB display name once stored
    assert _fields(violations(request)) == ["host.display_name"]
    assert violations(group_service_pb2.CancelGroupRequest(reason="r" * MAX_TEXT)) == []
    too_long = group_service_pb2.CancelGroupRequest(reason="r" * (MAX_TEXT + 1))
    assert _fields(violations(too_long)) == ["reason"]
    url = "https://shop.example/return?" + "q" * (MAX_URL - 28)
    intent = payment_service_pb2.CreatePaymentIntentRequest(return_url=url)
    assert len(url) == MAX_URL
    assert violations(intent) == []
    intent.return_url += "q"
    assert _fields(violations(intent)) == ["return_url"]


def test_ids_we_issue_must_be_lower_case_uuids() -> None:
    good = str(uuid.uuid4())
    assert violations(group_service_pb2.GetGroupRequest(group_id=good)) == []
    assert violations(group_service_pb2.GetGroupRequest(group_id="")) == []  # not set
    for bad in ("x1", good.upper(), "{" + good + "}", good.replace("-", ""), good + " ", "\x00"):
        request = group_service_pb2.RemoveMemberRequest(group_id=good, member_id=bad)
        assert _fields(violations(request)) == ["member_id"], bad
    (found,) = violations(group_service_pb2.GetGroupRequest(group_id="x1"))
    assert found.description == "must be an id as we issue it (a lower-case UUID)"


def test_ids_of_other_shapes_are_visible_ascii_and_bounded() -> None:
    for ok in ("m-1", "auth0|5f1e", "google-oauth2|1234", "ann@example.com", "x" * MAX_ID):
        request = payment_service_pb2.CreatePaymentIntentRequest(payer_user_id=ok)
        assert violations(request) == [], ok
    for bad in ("ann smith", "zoë", "x" * (MAX_ID + 1), "tab\there"):
        request = payment_service_pb2.CreatePaymentIntentRequest(payer_user_id=bad)
        assert _fields(violations(request)) == ["payer_user_id"], bad
    group = _group()
    group.members[1].share_spec.line_ids.append("l 3")
    assert _fields(violations(group)) == ["members[1].share_spec.line_ids[2]"]


def test_every_id_in_our_requests_has_a_deliberate_rule() -> None:
    """A new `*_id` field must be added to UUID_ID_FIELDS (we issue it) or to this test's list
    (someone else does), so nobody gets a UUID check on a provider's id by accident."""
    catalog = Catalog.load()
    seen: set[str] = set()

    def walk(descriptor: Descriptor, visited: set[str]) -> None:
        if descriptor.full_name in visited:
            return
        visited.add(descriptor.full_name)
        for fld in descriptor.fields:
            if fld.type == FieldDescriptor.TYPE_STRING and (
                fld.name.endswith(("_id", "_ids")) or fld.name == "id"
            ):
                seen.add(fld.name)
            if fld.message_type is not None:
                walk(fld.message_type, visited)

    for file in catalog.file_set.file:
        for service in file.service:
            for method in service.method:
                full = f"{file.package}.{service.name}.{method.name}"
                walk(catalog.pool.FindMethodByName(full).input_type, set())
    assert seen, "no id fields found"
    assert seen <= UUID_ID_FIELDS | OTHER_SHAPED_IDS, seen - UUID_ID_FIELDS - OTHER_SHAPED_IDS
    assert {"group_id", "member_id", "payment_id", "order_id"} <= seen


def test_map_keys_and_values_and_nesting() -> None:
    struct = struct_pb2.Struct()
    struct.fields["ok"].string_value = "fine"
    struct.fields["k\x00"].string_value = "v"
    struct.fields["n"].struct_value.fields["deep"].string_value = "x\x1b"
    assert sorted(_fields(violations(struct))) == [
        'fields["k\\u0000"]',
        'fields["n"].struct_value.fields["deep"].string_value',
    ]
    value = struct_pb2.Value()
    node = value
    for _ in range(MAX_DEPTH // 2):  # two messages a level: Value, then ListValue
        node = node.list_value.values.add()
    node.string_value = "bottom"
    assert violations(value) == [], "MAX_DEPTH messages deep is fine"
    node.list_value.values.add().string_value = "too deep"
    (found,) = violations(value)
    assert found.description == f"nested deeper than {MAX_DEPTH} messages"


def test_bytes_are_bounded() -> None:
    body = httpbody_pb2.HttpBody(content_type="application/json", data=b"\x00" * MAX_BYTES)
    request = payment_service_pb2.HandleWebhookRequest(provider="stripe", body=body)
    assert violations(request) == [], "raw webhook bytes are not text: any byte is fine"
    request.body.data += b"!"
    assert _fields(violations(request)) == ["body.data"]


def test_dynamic_messages_of_the_gateway_are_checked_the_same() -> None:
    catalog = Catalog.load()
    cls = catalog.message_class(
        catalog.pool.FindMessageTypeByName("mppo.group.v1.CreateGroupRequest")
    )
    request = cls.FromString(_group().SerializeToString())
    assert violations(request) == []
    request.host.display_name = "\x00"  # type: ignore[attr-defined]
    request.merchant_id = "m 1"  # type: ignore[attr-defined]
    assert _fields(violations(request)) == ["merchant_id", "host.display_name"]
