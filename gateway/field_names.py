"""Field paths in the form a REST client wrote them.

Services (and `mppo.platform.validation`) name a field at fault by its proto path:
`host.display_name`, `members[1].display_name`, `labels["k"]`. A REST client sent JSON, where
the same fields are `host.displayName` and `members[1].displayName`; a path or query value it
sent under the name it used (`group_id` in `/group/{group_id}`, `?page_size=` or `?pageSize=`).
`RestFieldNames` rewrites a proto path into that form, segment by segment, from the request
message's descriptors (each field's `json_name`): no table to keep in step with the protos.
Indexes and map keys are kept as they are; a segment that names no field (`Idempotency-Key`,
`body`) ends the rewriting and the rest is left untouched. gRPC callers see proto paths.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.descriptors import HttpBinding


def field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """The field of `descriptor` called `name`, by its proto name or its JSON name."""
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _bracket_end(path: str, start: int) -> int:
    """The index just past the `]` closing the bracket opened at `start` (JSON-quoted keys
    may hold `]` and `.`); len(path) when it is never closed."""
    i = start + 1
    if i < len(path) and path[i] == '"':
        i += 1
        while i < len(path) and path[i] != '"':
            i += 2 if path[i] == "\\" else 1
        i += 1
    closing = path.find("]", i)
    return len(path) if closing < 0 else closing + 1


def _kept(path: str, keep: Iterable[str]) -> bool:
    return any(path == k or path.startswith((f"{k}.", f"{k}[")) for k in keep)


def json_path(descriptor: Descriptor, path: str, keep: Iterable[str] = ()) -> str:
    """`path` (a proto field path into `descriptor`) with each field by its JSON name; a path
    that is, or lies under, one of the dotted proto paths in `keep` is returned as it is."""
    if not path or _kept(path, keep):
        return path
    out: list[str] = []
    current: Descriptor | None = descriptor
    i, n = 0, len(path)
    while i < n:
        j = i
        while j < n and path[j] not in ".[":
            j += 1
        fld = field_named(current, path[i:j]) if current is not None else None
        if fld is None:
            out.append(path[i:])
            break
        out.append(fld.json_name)
        k = j
        brackets = 0
        while k < n and path[k] == "[":
            end = _bracket_end(path, k)
            out.append(path[k:end])
            k = end
            brackets += 1
        current = fld.message_type
        if current is not None and current.GetOptions().map_entry:
            current = current.fields_by_name["value"].message_type if brackets else None
        if k < n and path[k] == ".":
            out.append(".")
            i = k + 1
        elif k < n:
            out.append(path[k:])
            break
        else:
            i = k
    return "".join(out)


class RestFieldNames:
    """Rewrites the field paths of one REST request's errors (see the module docstring)."""

    def __init__(
        self, binding: HttpBinding, variables: Iterable[str], query: Iterable[str]
    ) -> None:
        self._descriptor = binding.method.input_type
        keep = set(variables)  # path values: named as in the path template
        sent = set(query)
        for fld in self._descriptor.fields:
            in_body = binding.body == "*" or binding.body == fld.name
            if not in_body and fld.json_name not in sent:
                keep.add(fld.name)  # a query parameter, by its proto name unless sent in JSON's
        self._keep = frozenset(keep)

    def __call__(self, path: str) -> str:
        """`path` as the client named it."""
        return json_path(self._descriptor, path, self._keep)
