"""The three kinds as the SDK sees them: names a person may type, API paths, and objects from Python or YAML.

Objects are always validated by the API models (``interp_operator.api``), the same models the CRDs are generated
from, so a bad field is refused before anything reaches the cluster, with the field named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from ..api import GROUP, KINDS, VERSION, KindInfo, Resource
from ..api.base import drop_empty
from ..api.registry import BY_KIND

JOB_KINDS = ("ActivationDump", "SAETrainingJob")
"""Kinds that run to completion (Succeeded or Failed); the service is Ready instead."""


class InvalidObject(ValueError):
    """An object the API models refuse; the message names each bad field."""


def resolve_kind(name: str) -> KindInfo:
    """The kind for any name kubectl accepts: kind, plural, singular or short name, any case."""
    wanted = name.strip().lower()
    for info in KINDS:
        names = {info.kind.lower(), info.plural, info.singular, *info.short_names}
        if wanted in names or (wanted.split(".")[0] in names and wanted.endswith(f".{GROUP}")):
            return info
    choices = ", ".join(f"{i.kind} ({'/'.join(i.short_names)})" for i in KINDS)
    raise ValueError(f"unknown kind {name!r}; expected one of {choices}")


def collection_path(info: KindInfo, namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{info.plural}"


def object_path(info: KindInfo, namespace: str, name: str, subresource: str = "") -> str:
    return f"{collection_path(info, namespace)}/{name}" + (f"/{subresource}" if subresource else "")


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: the field's path in camelCase as written in YAML, then what is wrong."""
    lines = []
    for problem in err.errors():
        location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"])
        location = location.removeprefix(".")
        where = f"{prefix}.{location}" if prefix and location else prefix or location
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def to_resource(obj: Resource | Mapping[str, Any]) -> Resource:
    """A validated API model from a model or a plain mapping (``kind`` chooses the model)."""
    if isinstance(obj, Resource):
        return obj
    if not isinstance(obj, Mapping):
        raise InvalidObject(f"expected a custom resource object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind not in BY_KIND:
        raise InvalidObject(f"kind: expected one of {', '.join(BY_KIND)}, got {kind!r}")
    api_version = obj.get("apiVersion", f"{GROUP}/{VERSION}")
    if api_version != f"{GROUP}/{VERSION}":
        raise InvalidObject(f"apiVersion: expected {GROUP}/{VERSION}, got {api_version!r}")
    body = {k: v for k, v in obj.items() if k != "status"}
    try:
        return BY_KIND[str(kind)].parse(body)
    except ValidationError as err:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise InvalidObject(f"{kind} {name}: {format_validation_error(err)}") from None


def load_objects(source: str | Path | TextIO) -> list[Resource]:
    """Every document of a YAML (or JSON) stream as a validated model; a path, an open file or the text itself."""
    if isinstance(source, Path):
        text = source.read_text()
    elif isinstance(source, str):
        text = source
    else:
        text = source.read()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InvalidObject(f"not valid YAML: {err}") from None
    objects: list[Resource] = []
    for index, document in enumerate(documents):
        if isinstance(document, Mapping) and document.get("kind") == "List":
            objects.extend(to_resource(item) for item in document.get("items") or ())
        elif isinstance(document, Mapping):
            objects.append(to_resource(document))
        else:
            raise InvalidObject(f"document {index}: expected a mapping, got {type(document).__name__}")
    if not objects:
        raise InvalidObject("no objects in the input")
    return objects


def body_of(obj: Resource, namespace: str) -> dict[str, Any]:
    """The JSON the API server receives, in ``namespace`` unless the object names its own: the fields that were
    set, in camelCase (the API server fills in the defaults, the same ones the models have)."""
    body = drop_empty(obj.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True))
    body = {"apiVersion": obj.api_version, "kind": obj.kind, **body}
    body.pop("status", None)
    metadata = dict(body.get("metadata") or {})
    if not metadata.get("name") and not metadata.get("generateName"):
        raise InvalidObject(f"{obj.kind}: metadata.name is required")
    metadata.setdefault("namespace", namespace)
    body["metadata"] = metadata
    return body


def dump_yaml(documents: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False)
