"""Latent sharding on on-the-fly data: 2 ranks (gloo) that split every dictionary between them and run the tiny model
on the corpus themselves end where one unsharded process on the same stream ends."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from test_train_onthefly import files, job  # noqa: F401 (files is a fixture)
from test_train_sharded import run

from interp_workloads.train.config import parse_config
from interp_workloads.train.run import Trainer

BATCH = 96  # 6 contexts a step, 3 per rank
STEPS = 24
TOLERANCE = 2e-4
"""Sharding changes only the order of float32 sums: 24 steps keep every TopK choice, weights agree to 2e-4."""


def sharded_job(model, corpus, output, sharded: bool) -> dict:
    return job(model, corpus, output, tokens=STEPS * BATCH, batchSizeTokens=BATCH, latentSharding=sharded)


def test_latent_sharded_on_the_fly_run_ends_like_one_process(files, tmp_path):  # noqa: F811
    model, corpus = files
    unsharded = Trainer(parse_config(sharded_job(model, corpus, tmp_path / "unsharded", sharded=False))).run()
    message = run(sharded_job(model, corpus, tmp_path / "sharded", sharded=True), tmp_path / "run", world=2)
    assert message["verified"] is True and message["steps"] == STEPS
    for name in ("topk", "transcoder"):
        ours, theirs = (load_file(str(tmp_path / root / name / "sae.safetensors"))
                        for root in ("sharded", "unsharded"))
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=TOLERANCE, msg=f"{name}.{key}")
    # The metric spliced into the held-out forward reads the gathered dictionary: it matches too.
    ours, theirs = message["downstream"]["topk"], unsharded["downstream"]["topk"]
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert abs(ours[key] - value) < 1e-3, key
