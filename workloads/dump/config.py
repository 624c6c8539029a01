"""The dump's configuration: the ActivationDump spec (validated by the same model the CRD is generated from), where
each storage is, and this process's rank. Torch-free.

The operator writes ``{"kind", "name", "namespace", "uid", "spec", "paths", "gang"}`` to the file named by
``INTERP_CONFIG``; a standalone run needs only ``spec`` (and ``paths`` or ``file://`` URIs for its storage).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interp_operator.api.activationdump import ActivationDumpSpec
from interp_operator.api.common import StorageRef


class ConfigError(ValueError):
    """The config cannot work as given: retrying will not help (the workload exits with code 3)."""


# The spec fields that decide a store's contents. parallelism, worker, scheduling and the policies do not: a store
# is the same for any number of pods, so a dump may be resumed with another parallelism.
CONTENT_FIELDS = ("model", "dataset", "contextLength", "batchSize", "hookPoints", "dtype", "tokensPerShard",
                  "shuffle", "captureGradients")


@dataclass(frozen=True)
class DumpConfig:
    spec: ActivationDumpSpec
    name: str
    rank: int
    world_size: int
    model: str
    """A local directory (mounted storage) or a hub id."""
    dataset: Path
    output: Path
    raw: dict[str, Any]

    @property
    def stage(self) -> str:
        """Where extraction writes: straight into the final shards, or into raw/ for the shuffle pass."""
        return "raw" if self.spec.shuffle.enabled else "shards"

    @property
    def contexts_per_shard(self) -> int:
        return self.spec.tokens_per_shard // self.spec.context_length

    def content(self) -> dict[str, Any]:
        spec = self.spec.to_json_dict()
        return {key: spec[key] for key in CONTENT_FIELDS if key in spec}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()


def storage_path(role: str, storage: StorageRef | None, paths: dict[str, str]) -> Path:
    """Where a storage is in this process: the operator's INTERP_PATH_<ROLE> env, the config's paths, or a file:// URI.

    The env wins because runtimes that relocate mounts (interp-local) rewrite env values, not the config file.
    """
    env = os.environ.get("INTERP_PATH_" + "".join(c if c.isalnum() else "_" for c in role.upper()))
    if env:
        return Path(env)
    if role in paths:
        return Path(paths[role])
    if storage is not None and storage.uri and storage.uri.startswith("file://"):
        return Path(storage.uri.removeprefix("file://"))
    where = f"uri {storage.uri!r}" if storage is not None and storage.uri else "no path"
    raise ConfigError(f"{role}: {where}; mount it (claimName), give paths.{role} in the config, or use a file:// uri")


def _rank_and_world() -> tuple[int, int]:
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as err:
        raise ConfigError(f"RANK / WORLD_SIZE must be integers: {err}") from err
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is outside a world of size {world}")
    return rank, world


def parse_config(raw: dict[str, Any]) -> DumpConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
        raise ConfigError("the config must be a JSON object with an ActivationDump 'spec'")
    try:
        spec = ActivationDumpSpec.model_validate(raw["spec"])
    except ValidationError as err:
        raise ConfigError(f"invalid spec: {err}") from err
    paths = raw.get("paths") or {}
    rank, world = _rank_and_world()
    model = spec.model.hub_id or str(storage_path("model", spec.model.storage, paths))
    return DumpConfig(
        spec=spec,
        name=str(raw.get("name") or "activation-dump"),
        rank=rank,
        world_size=world,
        model=model,
        dataset=storage_path("dataset", spec.dataset.source, paths),
        output=storage_path("output", spec.output, paths),
        raw=raw,
    )


def load_config(path: str | None) -> DumpConfig:
    path = path or os.environ.get("INTERP_CONFIG")
    if not path:
        raise ConfigError("no config: pass --config or set INTERP_CONFIG")
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from err
    return parse_config(raw)
