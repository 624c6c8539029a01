"""Helpers of the dump tests: a tiny model and corpus on disk, configs, running ranks in-process or as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def dump_spec(model_dir: Path, corpus: Path, output: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"storage": {"uri": f"file://{model_dir}"}, "dtype": "float32"},
        "dataset": {"source": {"uri": f"file://{corpus}"}, "format": "jsonl"},
        "contextLength": 16,
        "batchSize": 4,
        "hookPoints": ["resid_post.0", "mlp_out.1"],
        "dtype": "float32",
        "tokensPerShard": 256,
        "shuffle": {"enabled": False},
        "output": {"uri": f"file://{output}"},
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def write_config(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"kind": "ActivationDump", "name": "test-dump", "spec": spec}))
    return path


def start_rank(config: Path, rank: int, world: int, log: Path, **env: str) -> subprocess.Popen:
    environment = os.environ | {"RANK": str(rank), "WORLD_SIZE": str(world), "HF_HUB_OFFLINE": "1",
                                "INTERP_LOG_FORMAT": "json", **env}
    environment.pop("INTERP_STATUS_PORT", None)
    return subprocess.Popen([sys.executable, "-P", "-m", "interp_workloads.dump", "--config", str(config)],
                            env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT)


def shard_digests(root: Path) -> dict[str, str]:
    manifest = json.loads((root / "manifest.json").read_text())
    return {entry["path"]: entry["sha256"] for shard in manifest["shards"] for entry in shard["files"].values()}
