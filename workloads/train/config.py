"""The trainer's configuration: an SAETrainingJob spec (validated by the model the CRD is generated from), where
each storage is, and this process's rank. Torch-free.

Two inputs give the same config: the operator's cfg.json (``{"kind", "name", "namespace", "uid", "spec", "paths",
"gang"}``) and an SAETrainingJob YAML file with local paths (``file://`` URIs), so one spec runs on a laptop and on
the cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interp_operator.api.saetrainingjob import SAETrainingJobSpec

from ..dump.config import ConfigError, storage_path

__all__ = ["ConfigError", "TrainConfig", "load_config", "parse_config"]

# The spec fields that decide what the checkpoints in an output directory hold. The gang, the policies, the
# intervals of checkpoints and metrics, and the collective timeout do not: a run may resume with other values.
CONTENT_FIELDS = ("model", "data", "saes")
TRAINING_CONTENT_FIELDS = ("tokens", "batchSizeTokens", "learningRate", "lrSchedule", "dtype", "latentSharding",
                           "normalizeActivations", "seed", "gradientClipNorm", "deadWindowTokens",
                           "shuffleWindowTokens")
STORE_ROLE = "activations"


@dataclass(frozen=True)
class TrainConfig:
    spec: SAETrainingJobSpec
    name: str
    rank: int
    world_size: int
    local_rank: int
    output: Path
    store: Path | None
    """The activation store (data.activationDump resolved by the operator, or data.store)."""
    model: str | None
    """A local model directory (mounted storage) or a hub id; None when the model cannot be loaded here."""
    raw: dict[str, Any]
    dataset: Path | None = None
    """The corpus of on-the-fly data (data.onTheFly.dataset.source)."""
    latent_shards: int = 1
    """Ranks that share one copy of every dictionary, each owning a slice of its latents (1: no sharding)."""

    def content(self) -> dict[str, Any]:
        """What decides the checkpoints' contents (compared against an output directory's fingerprint)."""
        spec = self.spec.to_json_dict()
        content = {key: spec[key] for key in CONTENT_FIELDS if key in spec}
        data = dict(content.get("data") or {})
        data.pop("store", None)  # where the store is mounted is not what it holds
        content["data"] = data
        training = spec["training"]
        content["training"] = {k: training[k] for k in TRAINING_CONTENT_FIELDS if k in training}
        return content

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()


def _rank_and_world() -> tuple[int, int, int]:
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
    except ValueError as err:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {err}") from err
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is outside a world of size {world}")
    return rank, world, local


def _latent_shards(world: int) -> int:
    """The shard group: the ranks of one pod when torchrun starts several there (LOCAL_WORLD_SIZE, one per GPU,
    where the per-step collectives are cheapest), else every rank of the gang; groups data-parallel among them."""
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    except ValueError as err:
        raise ConfigError(f"LOCAL_WORLD_SIZE must be an integer: {err}") from err
    if local <= 1:
        return world
    if world % local:
        raise ConfigError(f"training.latentSharding: the world size ({world}) is not a multiple of the ranks per "
                          f"pod (LOCAL_WORLD_SIZE {local}), which shard the latents")
    return local


def _check_names(spec: SAETrainingJobSpec) -> None:
    names = [sae.name for sae in spec.saes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"saes: names must be unique, repeated: {', '.join(duplicates)}")
    reserved = {"checkpoints", "profiles"}
    clash = sorted(reserved & set(names))
    if clash:
        raise ConfigError(f"saes: the names {clash} are reserved for the output's own folders")


def _model(spec: SAETrainingJobSpec, paths: dict[str, str]) -> str | None:
    if spec.model.hub_id:
        return spec.model.hub_id
    try:
        return str(storage_path("model", spec.model.storage, paths))
    except ConfigError:
        return None  # a store-fed run needs no model; on-the-fly data checks for it


def parse_config(raw: dict[str, Any]) -> TrainConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
        raise ConfigError("the config must be an object with an SAETrainingJob 'spec'")
    try:
        spec = SAETrainingJobSpec.model_validate(raw["spec"])
    except ValidationError as err:
        raise ConfigError(f"invalid spec: {err}") from err
    _check_names(spec)
    paths = raw.get("paths") or {}
    rank, world, local = _rank_and_world()
    data = spec.data
    store: Path | None = None
    dataset: Path | None = None
    if data.activation_dump is not None:
        try:
            store = storage_path(STORE_ROLE, None, paths)
        except ConfigError:
            raise ConfigError(
                f"data.activationDump: the store of ActivationDump {data.activation_dump.name!r} is not mounted "
                f"(the operator mounts it once the dump has Succeeded); outside a cluster use data.store with a "
                f"file:// uri") from None
    elif data.store is not None:
        store = storage_path(STORE_ROLE, data.store, paths)
    else:
        assert data.on_the_fly is not None  # the spec holds exactly one source
        dataset = storage_path("dataset", data.on_the_fly.dataset.source, paths)
    latent_shards = _latent_shards(world) if spec.training.latent_sharding else 1
    batch = spec.training.batch_size_tokens
    if batch % world:
        raise ConfigError(f"training.batchSizeTokens ({batch}) must be divisible by the world size ({world})")
    model = _model(spec, paths)
    if dataset is not None and model is None:
        raise ConfigError("model: data.onTheFly runs the model in the trainer, but its storage is not mounted "
                          "here; give model.hubId, paths.model or a file:// uri")
    name = raw.get("name") or (raw.get("metadata") or {}).get("name") or "sae-training-job"
    return TrainConfig(spec=spec, name=str(name), rank=rank, world_size=world, local_rank=local,
                       output=storage_path("output", spec.output, paths), store=store, model=model,
                       raw=raw, dataset=dataset, latent_shards=latent_shards)


def _read(path: Path) -> dict[str, Any]:
    """cfg.json, or an SAETrainingJob manifest in YAML (its metadata.name and spec; no cluster needed)."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: {err}") from err
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected an SAETrainingJob object")
        kind = document.get("kind")
        if kind is not None and kind != "SAETrainingJob":
            raise ConfigError(f"{path}: kind is {kind!r}, expected SAETrainingJob")
        return {"name": (document.get("metadata") or {}).get("name"), "spec": document.get("spec"),
                "paths": document.get("paths") or {}}
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return loaded


def load_config(path: str | None) -> TrainConfig:
    path = path or os.environ.get("INTERP_CONFIG")
    if not path:
        raise ConfigError("no config: pass --config or set INTERP_CONFIG")
    try:
        raw = _read(Path(path))
    except OSError as err:
        raise ConfigError(f"{path}: {err}") from err
    return parse_config(raw)
