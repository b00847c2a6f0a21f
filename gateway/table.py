"""One table of REST expectations derived from the descriptor set, checked against both the
Python gateway's router and Envoy's routes and JWT rules (tests/unit/test_deploy_config.py),
and walked by the integration tests: every binding, a concrete path for it, the gRPC method
it must reach, and whether it is a webhook (no JWT) or internal (refused at the edge).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.descriptors import Catalog, HttpBinding


@dataclass(frozen=True)
class RestCase:
    """A REST call the edge must handle in a known way."""

    verb: str
    path: str  # a concrete path matching the binding's template
    template: str
    grpc_path: str  # /package.Service/Method
    area: str  # upstream service: group, payment, order, notification
    webhook: bool
    internal: bool
    binding: HttpBinding


def sample_path(template: str, value: str = "x1") -> str:
    """A concrete path for a template: each variable (or `*`) becomes `value`, `**` too."""

    def variable(found: re.Match[str]) -> str:
        _, _, segments = found.group(1).partition("=")
        if not segments:
            return value
        return "/".join(value if seg in ("*", "**") else seg for seg in segments.split("/"))

    path = re.sub(r"\{([^}]*)\}", variable, template)
    return "/".join(value if seg in ("*", "**") else seg for seg in path.split("/"))


def rest_table(catalog: Catalog, value: str = "x1") -> list[RestCase]:
    """Every HTTP binding in the descriptor set, in file order; path variables set to `value`
    (give a UUID to get paths whose ids pass the hostile-input check, as issued ids do)."""
    return [
        RestCase(
            verb=b.verb,
            path=sample_path(b.template, value),
            template=b.template,
            grpc_path=b.grpc_path,
            area=b.area,
            webhook=b.webhook,
            internal=b.internal,
            binding=b,
        )
        for b in catalog.bindings
    ]
