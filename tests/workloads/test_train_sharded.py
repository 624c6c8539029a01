"""Latent-sharded training with real processes (gloo): a run whose dictionaries are split across 2 ranks, resumed
on 1 rank, then on 3, ends where one unsharded process ends; a 4-rank gang of 2 shard groups (latent sharding
within a "pod" of 2, data parallel across the pods) trains the same; each export of a sharded run is one SAE."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import D, spec, train
from test_train_distributed import launch, wait

from interp_workloads.sae import load_sae
from interp_workloads.train.checkpoint import read_checkpoint, step_dir

DICT = 96  # divisible by 1, 2, 3 and 4 shards
BATCH = 192  # divisible by 1, 2, 3 and 4 ranks
STEPS = 24
SAES = ("topk", "batchtopk", "jumprelu", "transcoder")
TOLERANCE = 2e-4
"""Sharding changes only the order of float32 sums: 24 steps keep every TopK choice, weights agree to 2e-4."""


def sharded_spec(store: Path, output: Path, sharded: bool = True) -> dict:
    config = spec(store, output, tokens=STEPS * BATCH, batchSizeTokens=BATCH, checkpointIntervalSteps=8,
                  metricsIntervalSteps=8, deadWindowTokens=1536, latentSharding=sharded,
                  gradientClipNorm=0.05)  # small enough to clip: the norm is summed over the shards
    base = {"hookPoint": "resid_post.0", "dictSize": DICT, "learningRate": 1e-2}
    config["saes"] = [base | {"name": "topk", "architecture": "topk", "k": 4},
                      base | {"name": "batchtopk", "architecture": "batchtopk", "k": 4},
                      base | {"name": "jumprelu", "architecture": "jumprelu", "sparsityCoefficient": 0.01},
                      base | {"name": "transcoder", "architecture": "topk", "k": 4,
                              "targetHookPoint": "mlp_out.0"}]
    return {"name": "planted", "spec": config}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from test_train import make_store

    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def unsharded(store, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("unsharded")
    train(sharded_spec(store, output, sharded=False))
    return output


def assert_same_exports(a: Path, b: Path) -> None:
    for name in SAES:
        ours, theirs = (load_file(str(root / name / "sae.safetensors")) for root in (a, b))
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=TOLERANCE, msg=f"{name}.{key}")


def run(config: dict, directory: Path, world: int, local_world: int | None = None) -> dict:
    codes = wait(launch(config, directory, world, local_world), timeout=300)
    assert codes == [0] * world, (directory / "rank-0.log").read_text()[-3000:]
    return json.loads((directory / "message-0").read_text())


def continue_from(source: Path, step: int, output: Path) -> None:
    shutil.copytree(step_dir(source, step), step_dir(output, step))
    shutil.copy(source / "train-config.json", output / "train-config.json")


def test_sharded_run_resumed_on_1_then_3_ranks_ends_like_one_process(store, unsharded, tmp_path):
    config = sharded_spec(store, tmp_path / "two")
    assert run(config, tmp_path / "run-two", world=2)["verified"] is True
    assert_same_exports(tmp_path / "two", unsharded)
    # Checkpoints hold whole tensors: the one at step 8 equals the unsharded run's.
    ours, theirs = (read_checkpoint(step_dir(root, 8)) for root in (tmp_path / "two", unsharded))
    for name in SAES:
        for key, value in theirs.tensors[name].items():
            torch.testing.assert_close(ours.tensors[name][key], value, rtol=0, atol=TOLERANCE, msg=f"{name}.{key}")

    one = tmp_path / "one"
    continue_from(tmp_path / "two", 8, one)
    config = sharded_spec(store, one)
    config["spec"]["training"]["checkpointsKept"] = 100
    assert run(config, tmp_path / "run-one", world=1)["resumedFrom"] == 8

    three = tmp_path / "three"
    continue_from(one, 16, three)
    message = run(sharded_spec(store, three), tmp_path / "run-three", world=3)
    assert message["resumedFrom"] == 16 and message["verified"] is True and message["steps"] == STEPS
    assert_same_exports(three, unsharded)
    # The export of a sharded run is one SAE, which encodes and decodes like the unsharded run's.
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(3))
    for name in ("topk", "jumprelu"):
        sae, reference = load_sae(three / name), load_sae(unsharded / name)
        assert sae.d_sae == DICT and tuple(sae.W_enc.shape) == (D, DICT)
        with torch.no_grad():
            torch.testing.assert_close(sae.decode(sae.encode(x)), reference.decode(reference.encode(x)),
                                       rtol=0, atol=1e-3)


def test_shard_groups_within_pods_train_data_parallel(store, tmp_path):
    """2 pods of 2 ranks: each pod's pair shards the latents, the pods are data parallel, so the run equals the
    unsharded 2-rank data-parallel run (BatchTopK picks its n*k within each replica's batch in both)."""
    data_parallel = tmp_path / "data-parallel"
    run(sharded_spec(store, data_parallel, sharded=False), tmp_path / "run-data-parallel", world=2)
    output = tmp_path / "out"
    assert run(sharded_spec(store, output), tmp_path / "run", world=4, local_world=2)["verified"] is True
    assert_same_exports(output, data_parallel)


def test_a_dictionary_not_divisible_by_the_shards_is_refused(store, tmp_path):
    config = sharded_spec(store, tmp_path / "out")
    config["spec"]["saes"][0]["dictSize"] = 100
    codes = wait(launch(config, tmp_path, world=3))
    assert codes[0] == 3
    log = (tmp_path / "rank-0.log").read_text()
    assert "saes[topk]: the dictionary size 100 is not divisible by the 3 latent shards" in log
