"""Objects from a few words: the builders behind ``interpctl train|dump|serve`` and their Python twins.

Storage is written as ``pvc://CLAIM[/SUBPATH]`` or ``file:///path`` (``s3://`` and ``gs://`` are refused with the
API's reason: not supported yet); a model as such a location or a Hugging Face hub id; an SAE as
``ARCH[:key=value...]``, e.g. ``topk:k=32:dict=16384``. Every builder returns a validated API model, so a bad
value is refused with the field named before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ..api import ActivationDump, InterpInferenceService, SAETrainingJob
from ..api.base import Resource
from ..api.common import ModelRef, StorageRef
from .resources import InvalidObject, format_validation_error

SAE_KEYS = {
    "name": "name", "hook": "hookPoint", "hookpoint": "hookPoint", "k": "k", "dict": "dictSize",
    "dictsize": "dictSize", "expansion": "expansionFactor", "x": "expansionFactor", "sparsity": "sparsityCoefficient",
    "l1": "sparsityCoefficient", "l0": "sparsityCoefficient", "lr": "learningRate", "seed": "seed",
    "aux": "auxKCoefficient",
}
INT_KEYS = {"k", "dictSize", "expansionFactor", "seed"}
FLOAT_KEYS = {"sparsityCoefficient", "learningRate", "auxKCoefficient"}


def storage(location: str, *, read_only: bool = False) -> dict[str, Any]:
    """``pvc://claim/sub/path`` → ``{claimName, subPath}``; a URI stays a URI."""
    if location.startswith("pvc://"):
        claim, _, sub_path = location.removeprefix("pvc://").partition("/")
        if not claim:
            raise InvalidObject(f"{location!r}: expected pvc://CLAIM[/SUBPATH]")
        ref: dict[str, Any] = {"claimName": claim}
        if sub_path.strip("/"):
            ref["subPath"] = sub_path.strip("/")
    elif re.match(r"^(file|s3|gs)://.+", location):
        ref = {"uri": location}
    else:
        raise InvalidObject(f"{location!r}: storage is pvc://CLAIM[/SUBPATH] or file://")
    if read_only:
        ref["readOnly"] = True
    try:
        StorageRef.model_validate(ref)
    except ValidationError as err:  # s3:// and gs:// are refused by the model, with the reason
        raise InvalidObject(f"{location!r}: {format_validation_error(err)}") from None
    return ref


def model(location: str, dtype: str | None = None) -> dict[str, Any]:
    """A hub id (``EleutherAI/pythia-70m``) or a storage location of a Hugging Face model directory."""
    ref: dict[str, Any] = ({"storage": storage(location, read_only=True)} if "://" in location
                           else {"hubId": location})
    if dtype:
        ref["dtype"] = dtype
    ModelRef.model_validate(ref)
    return ref


def sae(text: str, hook_point: str | None = None) -> dict[str, Any]:
    """``topk:k=32:dict=16384[:hook=resid_post.3][:name=l3-topk]`` as one entry of spec.saes."""
    architecture, *options = text.split(":")
    entry: dict[str, Any] = {"architecture": architecture.strip().lower()}
    for option in options:
        key, sep, value = option.partition("=")
        field = SAE_KEYS.get(key.strip().lower())
        if not sep or field is None:
            raise InvalidObject(f"--sae {text!r}: {option!r} is not KEY=VALUE with KEY one of {', '.join(SAE_KEYS)}")
        try:
            entry[field] = int(value) if field in INT_KEYS else float(value) if field in FLOAT_KEYS else value
        except ValueError:
            raise InvalidObject(f"--sae {text!r}: {key} must be a number, got {value!r}") from None
    entry.setdefault("hookPoint", hook_point)
    if entry["hookPoint"] is None:
        raise InvalidObject(f"--sae {text!r}: no hook point (add :hook=NAME or pass --hook)")
    if "name" not in entry:
        size = entry.get("dictSize") or f"x{entry.get('expansionFactor', '')}"
        hook = re.sub(r"[^a-z0-9]+", "-", entry["hookPoint"].lower()).strip("-")
        entry["name"] = f"{hook}-{entry['architecture']}-{size}"[:63].strip("-")
    return entry


def _metadata(name: str, labels: Mapping[str, str] | None) -> dict[str, Any]:
    return {"name": name, **({"labels": dict(labels)} if labels else {})}


def _build(cls: type[Resource], body: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(body)
    except ValidationError as err:
        raise InvalidObject(f"{body['kind']} {body['metadata']['name']}: {format_validation_error(err)}") from None


def _gpu_resources(gpus: int | None) -> dict[str, Any]:
    return {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}


def dump(name: str, *, model_location: str, dataset: str, hook_points: Sequence[str], output: str,
         dataset_format: str = "jsonl", context_length: int | None = None, batch_size: int | None = None,
         tokens_per_shard: int | None = None, max_tokens: int | None = None, dtype: str | None = None,
         parallelism: int = 1, gpus: int | None = None, labels: Mapping[str, str] | None = None,
         **spec: Any) -> ActivationDump:
    """An ActivationDump; ``spec`` adds or overrides any other spec field (camelCase, as in YAML)."""
    body_spec: dict[str, Any] = {
        "model": model(model_location, dtype),
        "dataset": {"source": storage(dataset, read_only=True), "format": dataset_format,
                    **({"maxTokens": max_tokens} if max_tokens else {})},
        "hookPoints": list(hook_points), "output": storage(output), "parallelism": parallelism,
    }
    optional = {"contextLength": context_length, "batchSize": batch_size, "tokensPerShard": tokens_per_shard,
                "dtype": dtype}
    body_spec |= {k: v for k, v in optional.items() if v is not None}
    resources = _gpu_resources(gpus)
    if resources:
        body_spec["worker"] = {"resources": resources}
    body = {"apiVersion": "interp.dev/v1alpha1", "kind": "ActivationDump", "metadata": _metadata(name, labels),
            "spec": body_spec | spec}
    return _build(ActivationDump, body)  # type: ignore[no-any-return]


def train(name: str, *, model_location: str, saes: Sequence[str | Mapping[str, Any]], output: str, tokens: int,
          activation_dump: str | None = None, dataset: str | None = None, hook_point: str | None = None,
          batch_size_tokens: int | None = None, learning_rate: float | None = None, replicas: int = 1,
          gpus: int | None = None, checkpoint_interval: int | None = None, labels: Mapping[str, str] | None = None,
          **spec: Any) -> SAETrainingJob:
    """An SAETrainingJob reading a finished ActivationDump (``activation_dump``) or a corpus on the fly."""
    if (activation_dump is None) == (dataset is None):
        raise InvalidObject("give exactly one of --dump NAME (a finished ActivationDump) or --dataset LOCATION")
    data = ({"activationDump": {"name": activation_dump}} if activation_dump
            else {"onTheFly": {"dataset": {"source": storage(str(dataset), read_only=True)}}})
    training: dict[str, Any] = {"tokens": tokens}
    optional = {"batchSizeTokens": batch_size_tokens, "learningRate": learning_rate,
                "checkpointIntervalSteps": checkpoint_interval}
    training |= {k: v for k, v in optional.items() if v is not None}
    gang: dict[str, Any] = {"replicas": replicas}
    resources = _gpu_resources(gpus)
    if resources:
        gang["resources"] = resources
    body_spec = {
        "model": model(model_location), "data": data,
        "saes": [sae(s, hook_point) if isinstance(s, str) else dict(s) for s in saes],
        "training": training, "output": storage(output), "gang": gang,
    }
    body = {"apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": _metadata(name, labels),
            "spec": body_spec | spec}
    return _build(SAETrainingJob, body)  # type: ignore[no-any-return]


def serve(name: str, *, model_location: str, replicas: int = 1, auth_secret: str | None = None,
          no_auth: bool = False, saes: Sequence[str] = (), port: int | None = None, gpus: int | None = None,
          labels: Mapping[str, str] | None = None, **spec: Any) -> InterpInferenceService:
    """An InterpInferenceService; ``saes`` are ``NAME=HOOK@LOCATION`` (a trained SAE's directory)."""
    if no_auth == (auth_secret is not None):
        raise InvalidObject("give exactly one of --auth-secret NAME or --no-auth")
    refs = []
    for item in saes:
        match = re.fullmatch(r"([^=]+)=([^@]+)@(.+)", item)
        if match is None:
            raise InvalidObject(f"--sae {item!r}: expected NAME=HOOK_POINT@LOCATION")
        refs.append({"name": match[1], "hookPoint": match[2], "storage": storage(match[3], read_only=True)})
    body_spec: dict[str, Any] = {
        "model": model(model_location), "replicas": replicas,
        "auth": {"disabled": True} if no_auth else {"secretName": auth_secret},
    }
    if refs:
        body_spec["saes"] = refs
    if port is not None:
        body_spec["port"] = port
    resources = _gpu_resources(gpus)
    if resources:
        body_spec["worker"] = {"resources": resources}
    body = {"apiVersion": "interp.dev/v1alpha1", "kind": "InterpInferenceService",
            "metadata": _metadata(name, labels), "spec": body_spec | spec}
    return _build(InterpInferenceService, body)  # type: ignore[no-any-return]
