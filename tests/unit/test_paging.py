"""AIP-158 page tokens: opaque, and bound to the listing they continue."""

from __future__ import annotations

import base64
import json

import pytest

from mppo.group.v1 import group_pb2
from mppo.group.v1 import group_service_pb2 as gs
from mppo.notification.v1 import notification_service_pb2 as ns
from mppo.platform import paging
from mppo.platform.errors import InvalidArgumentError


def test_a_token_round_trips_for_the_same_listing_whatever_the_page_size() -> None:
    query = paging.query_of(gs.ListGroupsRequest(page_size=2), "user:ana")
    token = paging.encode_token(query, "2030-01-01T00:00:00+00:00", "g-1")
    again = paging.query_of(gs.ListGroupsRequest(page_size=50, page_token=token), "user:ana")
    assert again == query
    assert paging.decode_token(token, again, 2) == ["2030-01-01T00:00:00+00:00", "g-1"]
    assert "g-1" not in token  # opaque
    assert "=" not in token  # URL-safe, no padding to escape


@pytest.mark.parametrize(
    "other",
    [
        (gs.ListGroupsRequest(status=group_pb2.GROUP_STATUS_OPEN), "user:ana"),  # filter
        (gs.ListGroupsRequest(), "user:bo"),  # caller
        (gs.GetGroupHistoryRequest(), "user:ana"),  # method
    ],
)
def test_a_token_continues_no_other_listing(other: tuple[gs.ListGroupsRequest, str]) -> None:
    token = paging.encode_token(paging.query_of(gs.ListGroupsRequest(), "user:ana"), "a", "b")
    with pytest.raises(InvalidArgumentError) as refused:
        paging.decode_token(token, paging.query_of(*other), 2)
    assert refused.value.reason == "PAGE_TOKEN_MISMATCH"
    assert [v.field for v in refused.value.violations] == ["page_token"]


def test_every_filter_field_is_part_of_the_listing() -> None:
    base = ns.ListNotificationsRequest(group_id="g")
    variants = [
        ns.ListNotificationsRequest(group_id="h"),
        ns.ListNotificationsRequest(group_id="g", member_id="m"),
        ns.ListNotificationsRequest(group_id="g", kind=ns.NOTIFICATION_KIND_GROUP_CONFIRMED),
        ns.ListNotificationsRequest(group_id="g", channel=ns.NOTIFICATION_CHANNEL_EMAIL),
    ]
    fingerprints = {paging.query_of(r, "service:test") for r in [base, *variants]}
    assert len(fingerprints) == 1 + len(variants)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "",
        # the layout before tokens were bound to their listing: refused, not misread
        base64.urlsafe_b64encode(json.dumps(["5"]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "q": "x", "k": [5]}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 2, "q": "x", "k": ["5"]}).encode()).decode(),
    ],
)
def test_a_token_that_is_not_ours_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        paging.decode_token(token, "x", 1)
    assert refused.value.reason == "PAGE_TOKEN_INVALID"


def test_a_token_with_another_number_of_parts_is_refused() -> None:
    token = paging.encode_token("x", "a")
    with pytest.raises(InvalidArgumentError):
        paging.decode_token(token, "x", 2)
