"""Decoding of the protobuf request bodies that typed kubectl commands send for a few built-in kinds.

kubectl's generators (``kubectl create namespace|configmap|secret|serviceaccount``) encode their object as
``application/vnd.kubernetes.protobuf``: the magic ``k8s\\0`` and a runtime.Unknown envelope around the
object's generated protobuf message. Only those kinds' fields are decoded here (field numbers from the
Kubernetes API's generated.proto); any other protobuf body is refused with 415.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"
Obj = dict[str, Any]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field; length-delimited values stay bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, raw in _fields(data):
        if number == 1:
            key = raw.decode()
        elif number == 2:
            value = raw
    return key, value


def _object_meta(data: bytes) -> Obj:
    meta: Obj = {}
    strings = {1: "name", 2: "generateName", 3: "namespace", 6: "resourceVersion", 5: "uid"}
    for number, _, raw in _fields(data):
        if number in strings:
            meta[strings[number]] = raw.decode()
        elif number in (11, 12):
            key, value = _map_entry(raw)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = value.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(raw.decode())
    return meta


def _namespace(data: bytes) -> Obj:
    out: Obj = {}
    for number, _, raw in _fields(data):
        if number == 1:
            out["metadata"] = _object_meta(raw)
        elif number == 2:
            finalizers = [v.decode() for n, _, v in _fields(raw) if n == 1]
            out["spec"] = {"finalizers": finalizers} if finalizers else {}
    return out


def _configmap(data: bytes) -> Obj:
    out: Obj = {}
    for number, _, raw in _fields(data):
        if number == 1:
            out["metadata"] = _object_meta(raw)
        elif number == 2:
            key, value = _map_entry(raw)
            out.setdefault("data", {})[key] = value.decode()
        elif number == 3:
            key, value = _map_entry(raw)
            out.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
        elif number == 4:
            out["immutable"] = bool(raw)
    return out


def _secret(data: bytes) -> Obj:
    out: Obj = {}
    for number, _, raw in _fields(data):
        if number == 1:
            out["metadata"] = _object_meta(raw)
        elif number == 2:
            key, value = _map_entry(raw)
            out.setdefault("data", {})[key] = base64.b64encode(value).decode()
        elif number == 3:
            out["type"] = raw.decode()
        elif number == 4:
            key, value = _map_entry(raw)
            out.setdefault("stringData", {})[key] = value.decode()
        elif number == 5:
            out["immutable"] = bool(raw)
    return out


def _metadata_only(data: bytes) -> Obj:
    return {"metadata": next((_object_meta(raw) for n, _, raw in _fields(data) if n == 1), {})}


_DECODERS = {("v1", "Namespace"): _namespace, ("v1", "ConfigMap"): _configmap, ("v1", "Secret"): _secret,
             ("v1", "ServiceAccount"): _metadata_only}


def decode(body: bytes) -> Obj:
    if not body.startswith(MAGIC):
        raise ApiError(415, "UnsupportedMediaType", "a protobuf body must start with the k8s magic bytes")
    api_version = kind = ""
    raw = b""
    try:
        for number, _, value in _fields(body[len(MAGIC):]):
            if number == 1:
                for sub, _, text in _fields(value):
                    if sub == 1:
                        api_version = text.decode()
                    elif sub == 2:
                        kind = text.decode()
            elif number == 2:
                raw = value
        decoder = _DECODERS.get((api_version, kind))
        if decoder is None:
            raise ApiError(415, "UnsupportedMediaType", f"interp-local decodes protobuf bodies for "
                           f"{', '.join(k for _, k in _DECODERS)} only, not {api_version}/{kind}; send JSON "
                           f"(e.g. kubectl create -f / kubectl apply -f)")
        return {"apiVersion": api_version, "kind": kind, **decoder(raw)}
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ApiError(400, "BadRequest", f"malformed protobuf body: {exc}") from exc
