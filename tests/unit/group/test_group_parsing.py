"""The group service's request validation (group_svc/entrypoints/parsing.py): a missing
required string is reported as "required" on its own field, and every violation names the
field the client got wrong (proto names; the gateway renames them to JSON form)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from group_svc.entrypoints import parsing
from mppo.common.v1 import cart_pb2
from mppo.group.v1 import group_pb2, group_service_pb2
from mppo.platform.errors import InvalidArgumentError
from mppo.platform.identity import Caller

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CALLER = Caller(user_id="alice")


def _create(**changes: object) -> group_service_pb2.CreateGroupRequest:
    request = group_service_pb2.CreateGroupRequest(
        merchant_id="sandbox-merchant",
        currency_code="USD",
        items=[
            cart_pb2.LineItem(
                line_id="l1", sku="PIZZA", name="Pizza", quantity=1, unit_price_minor=1200
            )
        ],
        split_mode=group_pb2.SPLIT_MODE_EQUAL,
        fallback_policy=group_pb2.FALLBACK_POLICY_CANCEL,
        host=group_pb2.MemberInput(display_name="Alice"),
    )
    for name, value in changes.items():
        if name == "item":
            request.items[0].CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    return request


def _violations(error: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def test_a_valid_request_passes() -> None:
    cmd = parsing.create_group(_create(), CALLER, NOW)
    assert [line.sku for line in cmd.items] == ["PIZZA"]


@pytest.mark.parametrize("sku", ["", "   "])
def test_a_cart_line_without_a_sku_is_required_not_unknown(sku: str) -> None:
    line = cart_pb2.LineItem(line_id="l1", sku=sku, name="Pizza", quantity=1, unit_price_minor=1)
    with pytest.raises(InvalidArgumentError) as err:
        parsing.create_group(_create(item=line), CALLER, NOW)
    assert _violations(err) == {"items[0].sku": "required"}


def test_a_missing_currency_is_required_and_an_unknown_one_says_so() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        parsing.create_group(_create(currency_code=""), CALLER, NOW)
    assert _violations(err) == {"currency_code": "required"}
    with pytest.raises(InvalidArgumentError) as unknown:
        parsing.create_group(_create(currency_code="XXQ"), CALLER, NOW)
    assert "ISO 4217" in _violations(unknown)["currency_code"]


def test_a_split_names_the_member_id_of_a_missing_or_duplicate_member() -> None:
    spec = group_pb2.ShareSpec(amount_minor=100)
    request = group_service_pb2.UpdateSplitRequest(
        group_id="g",
        split_mode=group_pb2.SPLIT_MODE_CUSTOM,
        shares=[
            group_service_pb2.MemberShare(member_id="m1", share_spec=spec),
            group_service_pb2.MemberShare(member_id="", share_spec=spec),
            group_service_pb2.MemberShare(member_id="m1", share_spec=spec),
        ],
    )
    with pytest.raises(InvalidArgumentError) as err:
        parsing.update_split(request)
    assert _violations(err) == {
        "shares[1].member_id": "required",
        "shares[2].member_id": "duplicate member",
    }


def test_a_split_labels_each_member_by_its_entry() -> None:
    request = group_service_pb2.UpdateSplitRequest(
        split_mode=group_pb2.SPLIT_MODE_EQUAL,
        shares=[group_service_pb2.MemberShare(member_id=m) for m in ("a", "b")],
    )
    mode, specs, labels = parsing.update_split(request)
    assert (mode.value, sorted(specs), labels) == (
        "EQUAL",
        ["a", "b"],
        {"a": "shares[0]", "b": "shares[1]"},
    )


@pytest.mark.parametrize("value", ["", "  "])
def test_a_blank_member_id_is_required(value: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        parsing.required_id(value, "member_id")
    assert _violations(err) == {"member_id": "required"}
    assert parsing.required_id(" m1 ", "member_id") == "m1"
