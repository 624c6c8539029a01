"""Data-parallel training with real processes: 2 ranks (gloo, env:// rendezvous as the gang engine sets it) train the
same SAEs as one process; a checkpoint resumes at another world size; a dead peer makes the other rank exit
non-zero (the gang restarts) and the restarted gang finishes from the checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import spec, train

from interp_workloads.train.checkpoint import step_dir, steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(config: dict, directory: Path, world: int, local_world: int | None = None) -> list[subprocess.Popen]:
    """``world`` ranks of ``python -m interp_workloads.train`` as the gang engine starts them (one per pod, or
    ``local_world`` per pod as torchrun starts them there)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cfg.json").write_text(json.dumps(config))
    port = free_port()
    ranks = []
    for rank in range(world):
        local = {"LOCAL_RANK": "0"} if local_world is None else {"LOCAL_RANK": str(rank % local_world),
                                                                  "LOCAL_WORLD_SIZE": str(local_world)}
        env = os.environ | local | {"RANK": str(rank), "WORLD_SIZE": str(world),
                            "MASTER_ADDR": "localhost", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
                            "INTERP_TERMINATION_MESSAGE_PATH": str(directory / f"message-{rank}"),
                            "INTERP_LOG_FORMAT": "json"}
        with open(directory / f"rank-{rank}.log", "w") as log:  # the child keeps its own descriptor
            ranks.append(subprocess.Popen(
                [sys.executable, "-P", "-m", "interp_workloads.train", "--config", str(directory / "cfg.json")],
                env=env, stdout=log, stderr=subprocess.STDOUT))
    return ranks


def wait(ranks: list[subprocess.Popen], timeout: float = 180) -> list[int]:
    return [rank.wait(timeout) for rank in ranks]


def final_fvu(output: Path, name: str) -> float:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return max((r for r in records if r["sae"] == name), key=lambda r: r["step"])["fvu"]


def short(store: Path, output: Path) -> dict:
    """32 steps, few enough that float32 summation order does not yet flip a TopK choice; no dead latents (AuxK
    normalises by each rank's own residual)."""
    return {"name": "planted", "spec": spec(store, output, tokens=4096, checkpointIntervalSteps=16,
                                            metricsIntervalSteps=8, deadWindowTokens=10**7)}


@pytest.fixture(scope="module")
def single(store, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("single")
    train(short(store, output))
    return output


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from test_train import make_store

    return make_store(tmp_path_factory.mktemp("store"))


def assert_same_saes(a: Path, b: Path, atol: float) -> None:
    for name in ("topk", "transcoder"):
        ours, theirs = (load_file(str(root / name / "sae.safetensors")) for root in (a, b))
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=atol)


def test_two_ranks_train_what_one_process_trains(single, store, tmp_path):
    output = tmp_path / "out"
    codes = wait(launch(short(store, output), tmp_path, world=2))
    assert codes == [0, 0], (tmp_path / "rank-0.log").read_text()[-3000:]
    message = json.loads((tmp_path / "message-0").read_text())
    assert message["verified"] is True and message["steps"] == 32
    assert json.loads((tmp_path / "message-1").read_text())["stage"] == "done"
    for name in ("topk", "transcoder"):
        assert final_fvu(output, name) == pytest.approx(final_fvu(single, name), rel=1e-4)
    # Gradients averaged over the ranks are the one-process gradients up to float32 summation order.
    assert_same_saes(output, single, atol=1e-4)


def test_a_checkpoint_resumes_at_another_world_size(single, store, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(step_dir(single, 16), step_dir(output, 16))
    shutil.copy(single / "train-config.json", output / "train-config.json")
    codes = wait(launch(short(store, output), tmp_path, world=2))
    assert codes == [0, 0], (tmp_path / "rank-0.log").read_text()[-3000:]
    assert json.loads((tmp_path / "message-0").read_text())["resumedFrom"] == 16
    assert_same_saes(output, single, atol=1e-4)


def test_a_dead_peer_fails_the_other_rank_and_the_restarted_gang_resumes(store, tmp_path):
    output = tmp_path / "out"
    config = {"name": "planted", "spec": spec(store, output, tokens=8192 * 6, batchSizeTokens=128,
                                              checkpointIntervalSteps=16, collectiveTimeoutSeconds=20)}
    ranks = launch(config, tmp_path / "first", world=2)
    deadline = time.monotonic() + 120
    while not steps(output) and time.monotonic() < deadline and ranks[0].poll() is None:
        time.sleep(0.1)
    assert steps(output), (tmp_path / "first" / "rank-0.log").read_text()[-3000:]
    ranks[1].kill()
    started = time.monotonic()
    code = ranks[0].wait(60)
    assert code not in (0, 3), "a lost peer is a retryable failure"
    assert time.monotonic() - started < 30, "no hang past the collective timeout"
    ranks[1].wait(10)
    codes = wait(launch(config, tmp_path / "second", world=2), timeout=300)
    assert codes == [0, 0], (tmp_path / "second" / "rank-0.log").read_text()[-3000:]
    message = json.loads((tmp_path / "second" / "message-0").read_text())
    assert message["verified"] is True and message["resumedFrom"] >= 16
