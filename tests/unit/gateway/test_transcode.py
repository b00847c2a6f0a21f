"""REST -> protobuf request and protobuf -> JSON, per the proto3 JSON mapping."""

from __future__ import annotations

import json

import pytest

from gateway.descriptors import Catalog
from gateway.routing import Router
from gateway.transcode import MAX_JSON_DEPTH, BadRequestError, Transcoder, json_depth


def _request(
    catalog: Catalog,
    verb: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    ctype: str = "application/json",
) -> object:
    match = Router(catalog.bindings).match(verb, path)
    return Transcoder(catalog).request(
        match.route.binding, match.variables, query or [], body, ctype
    )


def test_named_body_field_with_nested_path_variable(library: Catalog) -> None:
    msg = _request(
        library,
        "PATCH",
        "/v1/shelves/s1/books/b1",
        query=[("validateOnly", "true")],
        body=b'{"title": "Dune", "priceMinor": "1999", "genre": "GENRE_FICTION"}',
    )
    assert str(msg.book.name) == "shelves/s1/books/b1"  # type: ignore[attr-defined]
    assert msg.book.title == "Dune"  # type: ignore[attr-defined]
    assert msg.book.price_minor == 1999  # type: ignore[attr-defined]
    assert msg.book.genre == 1  # type: ignore[attr-defined]
    assert msg.validate_only is True  # type: ignore[attr-defined]


def test_query_parameters_repeated_nested_enum_int64_timestamp(library: Catalog) -> None:
    msg = _request(
        library,
        "GET",
        "/v1/shelves/s1/books:search",
        query=[
            ("words", "a"),
            ("words", "b"),
            ("filter.genres", "GENRE_POETRY"),
            ("filter.genres", "1"),
            ("filter.max_price_minor", "9007199254740993"),
            ("after", "2024-01-02T03:04:05Z"),
        ],
    )
    assert list(msg.words) == ["a", "b"]  # type: ignore[attr-defined]
    assert list(msg.filter.genres) == [2, 1]  # type: ignore[attr-defined]
    assert msg.filter.max_price_minor == 9007199254740993  # type: ignore[attr-defined]
    assert msg.after.seconds == 1704164645  # type: ignore[attr-defined]
    assert msg.shelf == "s1"  # type: ignore[attr-defined]


def test_body_star_accepts_int64_as_number_or_string_and_path_values(library: Catalog) -> None:
    for price in (b"12", b'"12"'):
        for shelf in (b"", b'"shelf": "s1", '):  # left out, or the path's own value
            msg = _request(
                library,
                "POST",
                "/v1/shelves/s1/books",
                body=b"{" + shelf + b'"book": {"priceMinor": ' + price + b"}}",
            )
            assert msg.book.price_minor == 12  # type: ignore[attr-defined]
            assert msg.shelf == "s1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("verb", "path", "body", "field"),
    [
        ("POST", "/v1/shelves/s1/books", b'{"shelf": "other", "book": {}}', "shelf"),
        ("PATCH", "/v1/shelves/s1/books/b1", b'{"name": "shelves/s2/books/b1"}', "book.name"),
    ],
)
def test_a_body_field_contradicting_the_path_is_refused(
    library: Catalog, verb: str, path: str, body: bytes, field: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(library, verb, path, body=body)
    assert (info.value.field, info.value.reason) == (field, "PATH_MISMATCH")
    assert "path" in info.value.description


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"book": {"priceMinor": "twelve"}}', "book.priceMinor"),
        (b'{"book": {"title": 5}}', "book.title"),
        (b'{"book": {"genre": "GENRE_NOPE"}}', "book.genre"),
        (b'{"book": {"colour": "red"}}', "book.colour"),
        (b'{"book": ', "body"),
        (b"[1, 2]", "body"),
    ],
)
def test_bad_json_names_the_field(library: Catalog, body: bytes, field: str) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(library, "POST", "/v1/shelves/s1/books", body=body)
    assert info.value.field == field
    assert info.value.reason


# what the client sent -> field (JSON, with indexes), description, reason: in plain words,
# never the parser's own text
_CREATE = {
    "merchantId": "m",
    "currencyCode": "USD",
    "items": [{"lineId": "l1", "quantity": 1, "unitPriceMinor": "100"}],
}


@pytest.mark.parametrize(
    ("change", "field", "description", "reason"),
    [
        (
            {"items": [{"lineId": "l1", "quantity": 1}, {"lineId": "l2", "quantity": "two"}]},
            "items[1].quantity",
            "must be an integer",
            "INVALID_TYPE",
        ),
        ({"host": {"displayName": 5}}, "host.displayName", "must be a string", "INVALID_TYPE"),
        (
            {"deadline": "not-a-date"},
            "deadline",
            "must be an RFC 3339 timestamp, e.g. 2030-01-15T18:00:00Z",
            "INVALID_TIMESTAMP",
        ),
        ({"colour": "red"}, "colour", "unknown field", "UNKNOWN_FIELD"),
        ({"host": {"nickname": "x"}}, "host.nickname", "unknown field", "UNKNOWN_FIELD"),
        (
            {"items": [{"lineId": "l1", "quantity": 3000000000}]},
            "items[0].quantity",
            "must be an integer from -2147483648 to 2147483647",
            "OUT_OF_RANGE",
        ),
        ({"items": {"lineId": "l1"}}, "items", "must be a JSON array", "INVALID_TYPE"),
        ({"items": [None]}, "items[0]", "must not be null", "INVALID_TYPE"),
        ({"host": "Hana"}, "host", "must be a JSON object", "INVALID_TYPE"),
        ({"feesMinor": True}, "feesMinor", "must be an integer", "INVALID_TYPE"),
    ],
)
def test_type_errors_are_plain_words_with_json_paths(
    mppo: Catalog, change: dict[str, object], field: str, description: str, reason: str
) -> None:
    body = json.dumps({**_CREATE, **change}).encode()
    with pytest.raises(BadRequestError) as info:
        _request(mppo, "POST", "/group", body=body)
    assert (info.value.field, info.value.description, info.value.reason) == (
        field,
        description,
        reason,
    )


def test_an_unknown_enum_name_lists_the_values(mppo: Catalog) -> None:
    body = json.dumps({**_CREATE, "splitMode": "SPLIT_MODE_NOPE"}).encode()
    with pytest.raises(BadRequestError) as info:
        _request(mppo, "POST", "/group", body=body)
    assert info.value.field == "splitMode"
    assert info.value.reason == "INVALID_ENUM_VALUE"
    assert "SPLIT_MODE_EQUAL" in info.value.description


@pytest.mark.parametrize("size", ["101", "100000", "2147483648", "99999999999999", "9" * 40])
def test_an_oversize_page_size_is_read_as_the_largest_not_refused(mppo: Catalog, size: str) -> None:
    for path in ("/group", "/payments", "/notifications", f"/group/{_UUID}/history"):
        query = [("page_size", size)] + ([("group_id", _UUID)] if "/group" not in path else [])
        msg = _request(mppo, "GET", path, query=query)
        assert msg.page_size == min(int(size), 2**31 - 1), path  # type: ignore[attr-defined]


_UUID = "3f2b8c1e-4d5a-4b6c-9d7e-0f1a2b3c4d5e"


def test_a_bad_query_value_is_named_in_plain_words(mppo: Catalog) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(mppo, "GET", "/group", query=[("page_size", "ten")])
    assert (info.value.field, info.value.description) == ("page_size", "must be an integer")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("nope", "1")], "nope"),
        ([("filter", "x")], "filter"),
        ([("filter.max_price_minor", "cheap")], "filter.max_price_minor"),
    ],
)
def test_bad_query_names_the_parameter(
    library: Catalog, query: list[tuple[str, str]], field: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(library, "GET", "/v1/shelves/s1/books:search", query=query)
    assert info.value.field == field


def test_an_unknown_query_parameter_is_a_query_problem_not_a_body_one(mppo: Catalog) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(mppo, "GET", "/group", query=[("x", "1")])
    error = info.value
    assert (error.field, error.reason, error.info_reason) == (
        "x",
        "BAD_QUERY_PARAMETER",
        "BAD_QUERY_PARAMETER",
    )
    assert str(error) == "x: unknown query parameter (no such field in ListGroupsRequest)"


def test_a_bad_query_value_keeps_its_own_reason_under_the_query_one(mppo: Catalog) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(mppo, "GET", "/group", query=[("page_size", "ten")])
    assert info.value.info_reason == "BAD_QUERY_PARAMETER"
    assert info.value.reason not in ("BAD_REQUEST_BODY", "BAD_QUERY_PARAMETER")


def test_a_body_problem_is_still_a_body_one(library: Catalog) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(library, "POST", "/v1/shelves/s1/books", body=b'{"nope": 1}')
    assert info.value.info_reason == "BAD_REQUEST_BODY"


def test_body_star_refuses_query_parameters(library: Catalog) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(library, "POST", "/v1/shelves/s1/books", query=[("shelf", "x")], body=b"{}")
    assert info.value.field == "shelf"
    assert info.value.info_reason == "BAD_QUERY_PARAMETER"


def test_http_body_takes_raw_bytes_and_content_type(mppo: Catalog) -> None:
    raw = b'{"id": "evt_1",  "amount": 1.50}\n'
    msg = _request(
        mppo, "POST", "/payments/webhook/stripe", body=raw, ctype="application/json; charset=utf-8"
    )
    assert msg.provider == "stripe"  # type: ignore[attr-defined]
    assert msg.body.data == raw  # type: ignore[attr-defined]
    assert msg.body.content_type == "application/json; charset=utf-8"  # type: ignore[attr-defined]


def test_response_json_prints_defaults_and_int64_as_string(library: Catalog) -> None:
    binding = Router(library.bindings).match("GET", "/v1/books/b1").route.binding
    book_cls = library.message_class(binding.method.output_type)
    book = book_cls(name="b1", price_minor=2**53 + 1)
    payload, ctype = Transcoder(library).response(binding, book)
    assert ctype == "application/json"
    data = json.loads(payload)
    assert data == {
        "name": "b1",
        "title": "",
        "priceMinor": str(2**53 + 1),
        "genre": "GENRE_UNSPECIFIED",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"book": ' + b"[" * 2000 + b"]" * 2000 + b"}", "JSON nested deeper than 32 levels"),
        (b"[" * 100_000, "JSON nested deeper than 32 levels"),
        (b'{"book": {"title": "caf\xe9"}}', "not UTF-8 (byte 23: invalid continuation byte)"),
        ('{"book": {"title": "x"}}'.encode("utf-16"), "not UTF-8 (byte 0: invalid start byte)"),
        (b'{"book": {"priceMinor": ' + b"9" * 5000 + b"}}", "malformed JSON: Exceeds the limit"),
    ],
)
def test_hostile_json_is_a_bad_request_not_a_crash(
    library: Catalog, body: bytes, message: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        _request(library, "POST", "/v1/shelves/s1/books", body=body)
    assert info.value.field == "body"
    assert info.value.description.startswith(message)


def test_json_depth_is_counted_outside_strings_up_to_the_limit() -> None:
    assert json_depth('{"a": [1, {"b": "[[[[{{{{"}], "c": {}}') == 3
    assert json_depth('["\\"[[[", []]') == 2  # an escaped quote does not end the string
    assert json_depth("[" * 10 + "]" * 10) == 10
    assert json_depth("[" * 2000, limit=32) == 33  # stops counting past the limit
    assert MAX_JSON_DEPTH == 32


def test_nesting_up_to_the_limit_is_parsed(library: Catalog) -> None:
    def body(depth: int) -> bytes:  # the object, "book", then lists down to `depth` levels
        lists = depth - 2
        return b'{"book": {"title": ' + b"[" * lists + b'"x"' + b"]" * lists + b"}}"

    with pytest.raises(BadRequestError) as info:
        _request(library, "POST", "/v1/shelves/s1/books", body=body(MAX_JSON_DEPTH))
    assert info.value.field == "book.title"  # parsed, then refused for its type
    with pytest.raises(BadRequestError) as info:
        _request(library, "POST", "/v1/shelves/s1/books", body=body(MAX_JSON_DEPTH + 1))
    assert info.value.field == "body"
    assert info.value.description == "JSON nested deeper than 32 levels"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # top level, the example the reviewer sent: both lists would be "members"
        (
            "/group/g1/members",
            b'{"members": [{"displayName": "A"}], "members": [{"displayName": "B"}]}',
            "members",
        ),
        # inside an element of a list
        (
            "/group/g1/members",
            b'{"members": [{"displayName": "A"}, {"displayName": "B", "email": "b@x.test",'
            b' "displayName": "C"}]}',
            "members[1].displayName",
        ),
        # inside a nested object
        (
            "/group",
            b'{"merchantId": "m", "host": {"displayName": "H", "shareSpec": {"weight": "1",'
            b' "weight": "2"}}}',
            "host.shareSpec.weight",
        ),
        # one field by its JSON name and by its proto name: two keys, one field
        (
            "/group/g1/members",
            b'{"members": [{"displayName": "A", "display_name": "B"}]}',
            "members[0].display_name",
        ),
    ],
)
def test_a_key_given_twice_is_refused_naming_its_json_path(
    mppo: Catalog, path: str, body: bytes, field: str
) -> None:
    with pytest.raises(BadRequestError) as refused:
        _request(mppo, "POST", path, body=body)
    assert refused.value.field == field
    assert refused.value.reason == "DUPLICATE_FIELD"


def test_the_same_key_in_different_objects_is_no_duplicate(mppo: Catalog) -> None:
    body = b'{"members": [{"displayName": "A"}, {"displayName": "B"}]}'
    msg = _request(mppo, "POST", "/group/g1/members", body=body)
    names = [m.display_name for m in msg.members]  # type: ignore[attr-defined]
    assert names == ["A", "B"]
