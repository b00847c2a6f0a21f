"""Render a kustomization offline, without kubectl: the subset of kustomize deploy/k8s uses.

``python scripts/render_k8s.py deploy/k8s/overlays/prod`` prints the multi-document YAML that
``kubectl kustomize`` (``kustomize build``) prints for it, for the fields this repository's
kustomizations use; any other field is refused, so the subset cannot silently drift from what
real kustomize would do:

* ``resources``: YAML files (multi-document) and directories holding a kustomization;
* ``namespace``: set on every namespaced object;
* ``labels`` with ``includeSelectors: false``: added to every object's ``metadata.labels``;
* ``images``: ``newName`` / ``newTag`` / ``digest`` for matching container images;
* ``replicas``: ``spec.replicas`` of the named Deployments/StatefulSets;
* ``patches``: JSON 6902 patches (``op`` add/remove/replace, inline or ``path``) applied to
  every object the ``target`` (kind, name) selects.

Transformers run in kustomize's order: patches, namespace, labels, replicas, images.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "render", "render_text"]

Obj = dict[str, Any]

_ALLOWED = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "labels",
    "images",
    "replicas",
    "patches",
}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
_SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet"}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is wrong."""


def _documents(path: Path) -> Iterator[Obj]:
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise KustomizeError(f"{path}: a document without kind/apiVersion")
        yield doc


def _kustomization(directory: Path) -> Obj:
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - _ALLOWED
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    if data.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{path}: kind must be Kustomization")
    return dict(data)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_op(obj: Obj, op: Obj) -> None:
    kind = op.get("op")
    parts = _pointer(str(op.get("path", "")))
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if kind == "remove":
        if isinstance(parent, list):
            del parent[int(last)]
        elif last in parent:
            del parent[last]
        else:
            raise KustomizeError(f"remove {op['path']}: no such field")
    elif kind in ("add", "replace"):
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif kind == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            if kind == "replace" and last not in parent:
                raise KustomizeError(f"replace {op['path']}: no such field")
            parent[last] = value
    else:
        raise KustomizeError(f"unsupported patch op {kind!r}")


def _selected(obj: Obj, target: Obj) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise KustomizeError(f"patch target fields {sorted(unknown)} are not supported")
    if "kind" in target and obj["kind"] != target["kind"]:
        return False
    return "name" not in target or obj["metadata"]["name"] == target["name"]


def _patch(objects: list[Obj], patch: Obj, directory: Path) -> None:
    unknown = set(patch) - {"target", "patch", "path"}
    if unknown:
        raise KustomizeError(f"patch fields {sorted(unknown)} are not supported")
    text = patch.get("patch")
    if text is None:
        text = (directory / str(patch["path"])).read_text(encoding="utf-8")
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise KustomizeError("only JSON 6902 patches (a list of operations) are supported")
    target = patch.get("target") or {}
    hits = [obj for obj in objects if _selected(obj, target)]
    if not hits:
        raise KustomizeError(f"patch target {target} matches nothing")
    for obj in hits:
        for op in ops:
            _apply_op(obj, op)


def _containers(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") if "template" in spec else None
    if obj["kind"] == "Pod":
        pod = spec
    if not pod:
        return
    for key in ("initContainers", "containers"):
        yield from pod.get(key, [])


def _set_image(container: Obj, image: Obj) -> None:
    ref = str(container.get("image", ""))
    name = ref.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    if name != image["name"]:
        return
    new = str(image.get("newName", name))
    if "digest" in image:
        container["image"] = f"{new}@{image['digest']}"
    elif "newTag" in image:
        container["image"] = f"{new}:{image['newTag']}"
    else:
        container["image"] = ref.replace(name, new, 1)


def render(directory: Path) -> list[Obj]:
    """Every object the kustomization in ``directory`` produces, in resource order."""
    directory = directory.resolve()
    k = _kustomization(directory)
    objects: list[Obj] = []
    for entry in k.get("resources", []):
        path = (directory / str(entry)).resolve()
        if path.is_dir():
            objects.extend(render(path))
        elif path.is_file():
            objects.extend(_documents(path))
        else:
            raise KustomizeError(f"{directory}: resource {entry} not found")
    for patch in k.get("patches", []):
        _patch(objects, patch, directory)
    namespace = k.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for label in k.get("labels", []):
        if label.get("includeSelectors", False) or label.get("includeTemplates", False):
            raise KustomizeError("labels: only includeSelectors/includeTemplates false")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
    for replica in k.get("replicas", []):
        hits = [
            o
            for o in objects
            if o["kind"] in _SCALABLE and o["metadata"]["name"] == replica["name"]
        ]
        if not hits:
            raise KustomizeError(f"replicas: no workload named {replica['name']}")
        for obj in hits:
            obj["spec"]["replicas"] = int(replica["count"])
    for image in k.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                _set_image(container, image)
    keys = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise KustomizeError(f"{directory}: duplicate objects {sorted(duplicates)}")
    return objects


def render_text(directory: Path) -> str:
    """:func:`render` as multi-document YAML."""
    return "---\n".join(
        yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in render(directory)
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python scripts/render_k8s.py DIRECTORY\n")
        sys.exit(2)
    sys.stdout.write(render_text(Path(sys.argv[1])))
