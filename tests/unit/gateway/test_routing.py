"""Path templates and the router: variables, nested fields, wildcards, verbs, 404 and 405."""

from __future__ import annotations

import pytest

from gateway.descriptors import INTERNAL_METHODS, WEBHOOK_METHODS, Catalog
from gateway.routing import (
    MethodNotAllowedError,
    RouteNotFoundError,
    Router,
    TemplateError,
    compile_template,
)
from gateway.table import rest_table, sample_path


def test_single_segment_variable_is_fully_decoded() -> None:
    template = compile_template("/group/{group_id}/members/{member_id}")
    assert template.match("/group/g%2F1/members/m%20x") == {"group_id": "g/1", "member_id": "m x"}
    assert template.match("/group/g1/members") is None
    assert template.match("/group/g1/members/m1/extra") is None


def test_variables_are_decoded_once_and_bytes_that_are_not_utf8_stay_invalid() -> None:
    template = compile_template("/group/{group_id}")
    assert template.match("/group/%2500") == {"group_id": "%00"}
    assert template.match("/group/%00") == {"group_id": "\x00"}
    assert template.match("/group/caf%C3%A9") == {"group_id": "café"}
    # Not silently U+FFFD (which would name some other, valid-looking value): a lone
    # surrogate, which the hostile-input check and protobuf both refuse.
    assert template.match("/group/caf%E9") == {"group_id": "caf\udce9"}


def test_multi_segment_variable_keeps_encoded_slashes() -> None:
    template = compile_template("/v1/{name=shelves/*/books/*}")
    assert template.match("/v1/shelves/s1/books/b%2F2") == {"name": "shelves/s1/books/b%2F2"}
    assert template.match("/v1/shelves/s1/books") is None
    assert template.match("/v1/racks/s1/books/b1") is None


def test_nested_field_path_and_deep_wildcard_and_verb() -> None:
    nested = compile_template("/v1/{book.name=shelves/*}")
    assert nested.match("/v1/shelves/s1") == {"book.name": "shelves/s1"}
    deep = compile_template("/files/{path=**}")
    assert deep.match("/files/a/b/c") == {"path": "a/b/c"}
    verb = compile_template("/v1/shelves/{shelf}/books:search")
    assert verb.match("/v1/shelves/s1/books:search") == {"shelf": "s1"}
    assert verb.match("/v1/shelves/s1/books") is None


@pytest.mark.parametrize(
    "template", ["group", "/group/{", "/group/{1bad}", "/a/{x}/{x}", "/a//b", "/a/{x=b=c}"]
)
def test_bad_templates_are_rejected(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


def test_most_literal_template_wins(mppo: Catalog) -> None:
    router = Router(mppo.bindings)
    match = router.match("GET", "/order/by-group/g1")
    assert match.route.binding.full_method == "mppo.order.v1.OrderService.GetOrderByGroup"
    assert match.variables == {"group_id": "g1"}
    assert router.match("GET", "/order/o1").route.binding.method.name == "GetOrder"


def test_unknown_path_and_wrong_method(library: Catalog) -> None:
    router = Router(library.bindings)
    with pytest.raises(RouteNotFoundError):
        router.match("GET", "/v2/nothing")
    with pytest.raises(MethodNotAllowedError) as info:
        router.match("DELETE", "/v1/shelves/s/books/b")
    assert info.value.allowed == ["GET", "PATCH"]
    assert router.allowed_methods("/v1/shelves/s/books/b") == ["GET", "PATCH"]


def test_additional_bindings_route_to_the_same_rpc(library: Catalog) -> None:
    router = Router(library.bindings)
    a = router.match("GET", "/v1/shelves/s1/books/b1")
    b = router.match("GET", "/v1/books/b1")
    assert a.route.binding.grpc_path == b.route.binding.grpc_path
    assert a.route.binding.grpc_path == "/test.library.v1.LibraryService/GetBook"
    assert b.variables == {"name": "b1"}


def test_internal_rest_bindings_are_not_routed(mppo: Catalog) -> None:
    router = Router(mppo.bindings)
    internal = [c for c in rest_table(mppo) if c.internal]
    assert [c.grpc_path for c in internal] == [
        "/mppo.order.v1.OrderService/CreateOrder",
        "/mppo.payment.v1.PaymentService/CreatePaymentIntent",
    ]
    for path in ("/order", "/payments/intents"):
        with pytest.raises(RouteNotFoundError):
            router.match("POST", path)


def _service_only() -> dict[str, frozenset[str]]:
    """Every service's service-only methods (full name -> who may call), from each service's
    own spec (its bootstrap's `service_only`)."""
    from group_svc.bootstrap import SPEC as GROUP
    from notification_svc.bootstrap import SPEC as NOTIFICATION
    from order_svc.bootstrap import SPEC as ORDER
    from payment_svc.bootstrap import SPEC as PAYMENT

    found: dict[str, frozenset[str]] = {}
    for spec in (GROUP, PAYMENT, ORDER, NOTIFICATION):
        for name, callers in spec.service_only.items():
            for service in spec.grpc_services:
                found[f"{service}.{name}"] = callers
    return found


def test_every_service_only_rest_binding_is_internal_or_the_webhook(mppo: Catalog) -> None:
    """A method only our services may call must not be reachable over REST (nor in OpenAPI):
    the gateway's INTERNAL_METHODS covers each annotated one, except the webhook, which the
    gateway itself calls for the provider."""
    service_only = _service_only()
    assert "mppo.payment.v1.PaymentService.CapturePayment" in service_only
    annotated = {b.full_method for b in mppo.bindings}
    for method, callers in service_only.items():
        if method not in annotated:
            continue
        if callers == {"gateway"}:
            assert method in WEBHOOK_METHODS, method
        else:
            assert method in INTERNAL_METHODS, f"{method} is service-only but served over REST"


def test_every_sample_path_routes_to_its_own_rpc(library: Catalog, mppo: Catalog) -> None:
    for catalog in (library, mppo):
        router = Router(catalog.bindings)
        for case in rest_table(catalog):
            if not case.internal:
                found = router.match(case.verb, case.path).route.binding
                assert found.grpc_path == case.grpc_path, case.template
    assert sample_path("/v1/{name=shelves/*/books/*}:get") == "/v1/shelves/x1/books/x1:get"
