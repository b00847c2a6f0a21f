"""`google.api.http` path templates and the router built from them.

Template syntax (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Paths are matched as sent (still percent-encoded: the gateway passes the raw path) and each
variable is decoded exactly once. `{x}` is `{x=*}`: one segment, fully percent-decoded. A
variable spanning several segments (`{name=groups/*/members/*}`) keeps `%2F` encoded, as the
spec asks. Among the templates that match a path, the one with the most literal segments wins
(then the fewest `**`), so
`/order/by-group/{group_id}` beats `/order/{order_id}`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.descriptors import HttpBinding

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class TemplateError(ValueError):
    """A path template that does not follow the google.api.http grammar."""


@dataclass(frozen=True)
class Variable:
    """A template variable: the field path it binds and whether it spans segments."""

    field_path: str
    multi_segment: bool


@dataclass(frozen=True)
class PathTemplate:
    """A compiled path template."""

    template: str
    regex: re.Pattern[str]
    variables: tuple[Variable, ...]
    literals: int
    deep_wildcards: int

    def match(self, path: str) -> dict[str, str] | None:
        """Field path -> decoded value for a matching request path, else None."""
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for i, var in enumerate(self.variables):
            raw = found.group(f"v{i}")
            values[var.field_path] = _decode(raw, keep_slash=var.multi_segment)
        return values


def _decode(raw: str, *, keep_slash: bool) -> str:
    """Percent-decode once. Bytes that are not UTF-8 become lone surrogates (not U+FFFD), so
    the request is refused as invalid instead of silently naming something else."""
    if keep_slash:
        return "%2F".join(
            unquote(part, errors="surrogateescape") for part in re.split("%2[Ff]", raw)
        )
    return unquote(raw, errors="surrogateescape")


def _segment_regex(segment: str) -> tuple[str, int, int]:
    """Regex, literal count and `**` count of one non-variable segment."""
    if segment == "*":
        return r"[^/]+", 0, 0
    if segment == "**":
        return r".*", 0, 1
    if not segment or any(c in segment for c in "{}*=:"):
        raise TemplateError(f"bad segment {segment!r}")
    return re.escape(segment), 1, 0


def compile_template(template: str) -> PathTemplate:
    """Compile a google.api.http path template."""
    if not template.startswith("/"):
        raise TemplateError(f"{template!r} must start with /")
    body, verb = template[1:], ""
    last_close = body.rfind("}")
    colon = body.find(":", last_close + 1)
    if colon >= 0:
        body, verb = body[:colon], body[colon + 1 :]
    parts: list[str] = []
    variables: list[Variable] = []
    literals = deep = 0
    for token in _split_segments(body):
        if token.startswith("{"):
            inner = token[1:-1]
            field_path, _, sub = inner.partition("=")
            if not _IDENT.match(field_path):
                raise TemplateError(f"bad variable {token!r} in {template!r}")
            sub_segments = sub.split("/") if sub else ["*"]
            pieces = []
            for seg in sub_segments:
                rx, lit, dp = _segment_regex(seg)
                pieces.append(rx)
                literals += lit
                deep += dp
            multi = len(sub_segments) > 1 or sub_segments == ["**"]
            parts.append(f"(?P<v{len(variables)}>{'/'.join(pieces)})")
            variables.append(Variable(field_path, multi))
        else:
            rx, lit, dp = _segment_regex(token)
            parts.append(rx)
            literals += lit
            deep += dp
    regex = "/" + "/".join(parts) + (f":{re.escape(verb)}" if verb else "")
    names = [v.field_path for v in variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"{template!r} binds a field twice")
    return PathTemplate(template, re.compile(regex), tuple(variables), literals, deep)


def _split_segments(body: str) -> list[str]:
    """Split on `/` outside braces."""
    tokens: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            tokens.append(body[start:i])
            start = i + 1
    tokens.append(body[start:])
    if depth != 0:
        raise TemplateError(f"unbalanced braces in /{body}")
    return tokens


@dataclass(frozen=True)
class Route:
    """A binding with its compiled template."""

    binding: HttpBinding
    template: PathTemplate


@dataclass(frozen=True)
class Match:
    """The route chosen for a request and the path variables it bound."""

    route: Route
    variables: dict[str, str]


class RouteNotFoundError(LookupError):
    """No template matches the path."""


class MethodNotAllowedError(LookupError):
    """Templates match the path, but none for this HTTP method."""

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = sorted(set(allowed))


class Router:
    """Every public REST binding, matched by method and path."""

    def __init__(self, bindings: Sequence[HttpBinding]) -> None:
        routes = [Route(b, compile_template(b.template)) for b in bindings if not b.internal]
        routes.sort(key=lambda r: (-r.template.literals, r.template.deep_wildcards))
        self.routes = routes
        #: internal bindings: answered as if no route existed (not 405 because a public
        #: template such as /payments/{payment_id} also matches /payments/intents)
        self.hidden = [Route(b, compile_template(b.template)) for b in bindings if b.internal]

    def match(self, verb: str, path: str) -> Match:
        """The route for `verb path`; RouteNotFoundError or MethodNotAllowedError otherwise."""
        for hidden in self.hidden:
            if hidden.binding.verb == verb and hidden.template.match(path) is not None:
                raise RouteNotFoundError(path)
        allowed: list[str] = []
        for route in self.routes:
            variables = route.template.match(path)
            if variables is None:
                continue
            if route.binding.verb == verb:
                return Match(route, variables)
            allowed.append(route.binding.verb)
        if allowed:
            raise MethodNotAllowedError(allowed)
        raise RouteNotFoundError(path)

    def allowed_methods(self, path: str) -> list[str]:
        """The HTTP methods some route serves at `path` (for CORS preflight)."""
        return sorted({r.binding.verb for r in self.routes if r.template.match(path) is not None})
