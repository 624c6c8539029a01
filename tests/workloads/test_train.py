"""The SAE trainer on one process: config from cfg.json and from a job YAML, planted dictionaries recovered, metrics,
curves and verified exports, checkpoints (atomic, corrupt-fallback, resume exactness), bad input, non-finite steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from interp_workloads.store.synthetic import write_synthetic_store
from interp_workloads.train.checkpoint import CHECKPOINTS, load_latest, save_checkpoint, step_dir, steps
from interp_workloads.train.config import ConfigError, load_config, parse_config
from interp_workloads.train.schedule import lr_factor

D, F_TRUE, K_TRUE = 32, 64, 4
HOOK, TARGET = "resid_post.0", "mlp_out.0"


def planted() -> tuple[torch.Tensor, torch.Tensor]:
    """A unit-norm dictionary [F_TRUE, D] and a linear map [D, D] (the transcoder's target is x @ map)."""
    generator = torch.Generator().manual_seed(1234)
    dictionary = torch.randn(F_TRUE, D, generator=generator)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    linear = torch.randn(D, D, generator=generator) / D ** 0.5
    return dictionary, linear


def planted_values(nan_rows: range = range(0)):
    dictionary, linear = planted()

    def values(hook: str, rows: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(rows[0]) + 1 if rows.numel() else 0)
        n = rows.numel()
        codes = torch.zeros(n, F_TRUE)
        active = torch.rand(n, F_TRUE, generator=generator).argsort(dim=1)[:, :K_TRUE]
        codes.scatter_(1, active, 0.5 + torch.rand(n, K_TRUE, generator=generator))
        x = codes @ dictionary
        out = x if hook == HOOK else x @ linear
        bad = torch.tensor([int(r) in nan_rows for r in rows])
        out[bad] = float("nan")
        return out

    return values


def make_store(root: Path, tokens: int = 8192, nan_rows: range = range(0)) -> Path:
    shards = [tokens // 4] * 4
    write_synthetic_store(root, shards, {HOOK: D, TARGET: D}, values=planted_values(nan_rows))
    return root


def spec(store: Path, output: Path, **training) -> dict:
    return {
        "model": {"hubId": "synthetic/planted"},
        "data": {"store": {"uri": f"file://{store}"}},
        "saes": [
            {"name": "topk", "hookPoint": HOOK, "architecture": "topk", "dictSize": 128, "k": K_TRUE,
             "learningRate": 2e-2},
            {"name": "transcoder", "hookPoint": HOOK, "targetHookPoint": TARGET, "architecture": "topk",
             "dictSize": 128, "k": K_TRUE, "learningRate": 2e-2},
        ],
        "training": {"tokens": 32768, "batchSizeTokens": 128, "lrSchedule": {"warmupSteps": 4},
                     "checkpointIntervalSteps": 64, "metricsIntervalSteps": 32, "checkpointsKept": 100,
                     "deadWindowTokens": 2048} | training,
        "output": {"uri": f"file://{output}"},
    }


def train(config: dict) -> dict:
    from interp_workloads.train.run import Trainer

    return Trainer(parse_config(config)).run()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("run")
    return output, train({"name": "planted", "spec": spec(store, output)})


# -- config ----------------------------------------------------------------------------------------------------------
def test_a_job_yaml_with_local_paths_gives_the_cfg_json_config(tmp_path, store):
    body = {"apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": {"name": "laptop"},
            "spec": spec(store, tmp_path / "out")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(body))
    (tmp_path / "cfg.json").write_text(json.dumps({"name": "laptop", "spec": body["spec"]}))
    from_yaml, from_json = load_config(str(tmp_path / "job.yaml")), load_config(str(tmp_path / "cfg.json"))
    assert from_yaml.spec == from_json.spec and from_yaml.name == from_json.name == "laptop"
    assert from_yaml.store == store and from_yaml.output == tmp_path / "out"


@pytest.mark.parametrize(("change", "field"), [
    ({"kind": "ActivationDump"}, "kind is 'ActivationDump'"),
    ({"spec": {"saes": []}}, "saes"),
])
def test_a_bad_job_yaml_names_the_problem(tmp_path, store, change, field):
    body = {"kind": "SAETrainingJob", "metadata": {"name": "x"}, "spec": spec(store, tmp_path)} | change
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match=field):
        load_config(str(tmp_path / "job.yaml"))


def test_a_dump_reference_needs_the_operator_to_mount_its_store(tmp_path, store):
    body = spec(store, tmp_path) | {"data": {"activationDump": {"name": "d"}}}
    with pytest.raises(ConfigError, match=r"data\.activationDump"):
        parse_config({"spec": body})
    config = parse_config({"spec": body, "paths": {"activations": str(store)}})
    assert config.store == store


def test_latent_shards_are_the_ranks_of_a_pod_or_the_whole_gang(tmp_path, store, monkeypatch):
    sharded = {"spec": spec(store, tmp_path, latentSharding=True)}
    assert parse_config(sharded).latent_shards == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_config(sharded).latent_shards == 4
    assert parse_config({"spec": spec(store, tmp_path)}).latent_shards == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert parse_config(sharded).latent_shards == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"training\.latentSharding: the world size \(4\) is not a multiple"):
        parse_config(sharded)


def test_unsupported_modes_are_refused_by_name(tmp_path, store):
    on_the_fly = spec(store, tmp_path) | {"data": {"onTheFly": {"dataset": {"source": {"uri": f"file://{tmp_path}"}}}},
                                          "model": {"storage": {"claimName": "models"}}}
    with pytest.raises(ConfigError, match=r"model: data\.onTheFly runs the model"):
        parse_config({"spec": on_the_fly})


def test_lr_schedule_warms_up_holds_and_decays():
    from interp_operator.api.saetrainingjob import LrScheduleSpec

    linear = LrScheduleSpec(warmup_steps=10, decay="linear", decay_start_fraction=0.5)
    assert [round(lr_factor(linear, s, 100), 3) for s in (0, 4, 9, 30, 50, 75, 99)] == \
        [0.1, 0.5, 1.0, 1.0, 1.0, 0.5, 0.02]
    cosine = LrScheduleSpec(warmup_steps=0, decay="cosine", decay_start_fraction=0.0)
    assert lr_factor(cosine, 50, 100) == pytest.approx(0.5) and lr_factor(cosine, 0, 100) == 1.0


# -- checkpoints -----------------------------------------------------------------------------------------------------
def test_checkpoints_are_atomic_and_a_corrupt_latest_falls_back(tmp_path):
    for step in (4, 8):
        save_checkpoint(tmp_path, step, {"step": step}, {"a": {"w": torch.full((3,), float(step))}}, keep=2)
    assert steps(tmp_path) == [4, 8]
    assert not [p for p in (tmp_path / CHECKPOINTS).iterdir() if p.name.startswith(".")]
    latest = load_latest(tmp_path)
    assert latest.step == 8 and torch.equal(latest.tensors["a"]["w"], torch.full((3,), 8.0))
    with open(step_dir(tmp_path, 8) / "a.safetensors", "r+b") as handle:  # flip one byte of the weights
        handle.seek(-1, 2)
        byte = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert load_latest(tmp_path).step == 4
    save_checkpoint(tmp_path, 12, {"step": 12}, {"a": {"w": torch.zeros(1)}}, keep=2)
    assert steps(tmp_path) == [8, 12]


# -- training --------------------------------------------------------------------------------------------------------
def _max_cosine(learned: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    learned = learned / learned.norm(dim=1, keepdim=True)
    return (truth @ learned.T).max(dim=1).values


def test_two_saes_from_one_stream_recover_the_planted_dictionary_and_map(trained, store):
    output, result = trained
    assert result["verified"] is True and result["saes"] == ["topk", "transcoder"]
    assert result["steps"] == 256 and result["tokens"] == 32768
    exports = json.loads((output / "exports.json").read_text())["saes"]
    assert set(exports) == {"topk", "transcoder"}
    for name, entry in exports.items():
        for file, record in entry["files"].items():
            assert (output / name / file).stat().st_size == record["bytes"]
    from interp_workloads.sae import load_sae

    dictionary, linear = planted()
    sae = load_sae(output / "topk", "cpu")
    decoder = dict(sae.named_parameters())["W_dec"].detach()
    cosines = _max_cosine(decoder if decoder.shape[1] == D else decoder.T, dictionary)
    assert cosines.mean() >= 0.9, cosines
    # The transcoder maps x to x @ linear: its reconstructions of fresh inputs match the map.
    x = planted_values()(HOOK, torch.arange(100_000, 100_512))
    with torch.no_grad():
        transcoder = load_sae(output / "transcoder", "cpu")
        predicted = transcoder.decode(transcoder.encode(x))
    expected = x @ linear
    fvu = ((predicted - expected) ** 2).sum() / ((expected - expected.mean(0)) ** 2).sum()
    assert fvu < 0.15, fvu
    # Its decoder holds the images of the planted atoms under the map.
    mapped = dictionary @ linear
    mapped = mapped / mapped.norm(dim=1, keepdim=True)
    cosines = _max_cosine(dict(transcoder.named_parameters())["W_dec"].detach(), mapped)
    assert cosines.mean() >= 0.9, cosines


def test_metrics_log_curves_and_status_report(trained):
    output, _ = trained
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["sae"] == "topk"] == list(range(32, 257, 32))
    first, last = (next(r for r in records if r["sae"] == "topk" and r["step"] == s) for s in (32, 256))
    assert last["fvu"] < first["fvu"] and last["fvu"] < 0.15
    assert last["l0"] == pytest.approx(K_TRUE, abs=0.01)
    assert 0 <= last["deadFraction"] <= 1 and 0 <= last["denseFraction"] <= 1
    assert last["explainedVariance"] == pytest.approx(1 - last["fvu"])
    assert (output / "training-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert steps(output)[-1] == 256


def test_interrupted_and_resumed_equals_uninterrupted(trained, store, tmp_path):
    """Resume from the step-64 checkpoint of the finished run in a fresh output: the final SAEs are the same."""
    output, _ = trained
    shutil.copytree(step_dir(output, 64), step_dir(tmp_path, 64))
    shutil.copy(output / "train-config.json", tmp_path / "train-config.json")
    result = train({"name": "planted", "spec": spec(store, tmp_path)})
    assert result["resumedFrom"] == 64 and result["steps"] == 256
    for name in ("topk", "transcoder"):
        ours, theirs = (load_file(str(root / name / "sae.safetensors")) for root in (tmp_path, output))
        assert ours.keys() == theirs.keys()
        for key in ours:  # same order of operations on one thread: equal up to float32 rounding
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=1e-7)
    resumed = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    original = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip([r for r in resumed if r["step"] == 256], [r for r in original if r["step"] == 256], strict=True):
        assert a["fvu"] == pytest.approx(b["fvu"], rel=1e-5)


def test_an_output_holding_another_jobs_checkpoints_is_refused(trained, store):
    output, _ = trained
    other = spec(store, output, learningRate=1e-3)
    other["saes"][0]["k"] = 8
    with pytest.raises(ConfigError, match=r"differs in: saes, training.learningRate"):
        train({"spec": other})
    assert steps(output)[-1] == 256, "nothing already written is lost"


def test_an_unknown_hook_point_names_the_field(store, tmp_path):
    bad = spec(store, tmp_path)
    bad["saes"][1]["targetHookPoint"] = "mlp_out.7"
    with pytest.raises(ConfigError, match=r"saes\[transcoder\]\.targetHookPoint: 'mlp_out.7' is not in the "):
        train({"spec": bad})


def poison(monkeypatch, bad_steps: set[int]) -> None:
    """NaN activations in the batches of ``bad_steps`` (a store cannot hold them: its manifest stats must be finite,
    so they stand for a damaged read or an on-the-fly extraction gone wrong)."""
    from interp_workloads.train.run import Trainer

    original = Trainer._batches

    def batches(self, store):
        for position, activations in original(self, store):
            if self.step in bad_steps:
                activations = {h: torch.full_like(x, float("nan")) for h, x in activations.items()}
            yield position, activations

    monkeypatch.setattr(Trainer, "_batches", batches)


def test_non_finite_batches_are_skipped_and_counted(tmp_path, store, monkeypatch):
    poison(monkeypatch, {2})
    output = tmp_path / "out"
    result = train({"spec": spec(store, output, tokens=4096)})
    assert result["verified"] is True
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert {r["skippedSteps"] for r in records if r["step"] == 32} == {1}
    for name in ("topk", "transcoder"):
        weights = load_file(str(output / name / "sae.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_recurring_non_finite_steps_roll_back_once_then_fail(tmp_path, store, monkeypatch):
    from interp_workloads.train.run import TrainingDiverged

    poison(monkeypatch, set(range(10, 16)))
    output = tmp_path / "out"
    with pytest.raises(TrainingDiverged, match="again after rolling back"):
        train({"spec": spec(store, output, tokens=4096, maxSkippedSteps=2, checkpointIntervalSteps=8)})
    assert steps(output) == [8], "the checkpoint before the bad data is kept"


# -- every architecture --------------------------------------------------------------------------------------------
ARCHITECTURES = {
    "batchtopk": {"architecture": "batchtopk", "k": K_TRUE},
    "jumprelu": {"architecture": "jumprelu", "sparsityCoefficient": 3.0},
    "relu": {"architecture": "relu", "sparsityCoefficient": 1.0},
}


@pytest.fixture(scope="module")
def every_architecture(store, tmp_path_factory) -> Path:
    """One SAE of each remaining architecture from one stream, 1024 steps (JumpReLU's threshold, moved only by the
    straight-through estimator's narrow kernel, is the slowest to settle)."""
    output = tmp_path_factory.mktemp("architectures")
    body = spec(store, output, tokens=131072, checkpointIntervalSteps=1024, metricsIntervalSteps=128)
    body["saes"] = [{"name": name, "hookPoint": HOOK, "dictSize": 128, "learningRate": 2e-2} | fields
                    for name, fields in ARCHITECTURES.items()]
    result = train({"name": "architectures", "spec": body})
    assert result["verified"] is True
    return output


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_recovers_the_planted_dictionary(every_architecture, name):
    from interp_workloads.sae import load_sae

    dictionary, _ = planted()
    sae = load_sae(every_architecture / name, "cpu")
    cosines = _max_cosine(dict(sae.named_parameters())["W_dec"].detach(), dictionary)
    assert cosines.mean() >= 0.9, (name, cosines.mean())
    x = planted_values()(HOOK, torch.arange(100_000, 100_512))
    with torch.no_grad():
        latents = sae.encode(x)
        fvu = ((sae.decode(latents) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    l0 = float((latents != 0).sum(1).float().mean())
    assert fvu < 0.25 and 0.5 * K_TRUE <= l0 <= 3 * K_TRUE, (name, float(fvu), l0)


def test_the_profile_annotation_traces_the_named_steps(tmp_path, store, monkeypatch):
    podinfo = tmp_path / "podinfo"
    podinfo.mkdir()
    (podinfo / "annotations").write_text('interp.dev/profile-steps="2-4"\n')
    monkeypatch.setenv("INTERP_PODINFO_DIR", str(podinfo))
    output = tmp_path / "out"
    train({"spec": spec(store, output, tokens=1024)})
    trace = output / "profiles" / "profile-rank0-steps-2-4.json"
    assert json.loads(trace.read_text())["traceEvents"], "a Chrome trace with events"


def test_the_command_exits_3_with_the_reason_when_the_input_cannot_work(tmp_path, store):
    import os
    import subprocess
    import sys

    bad = spec(store, tmp_path / "out")
    bad["saes"][0]["hookPoint"] = "resid_post.9"
    (tmp_path / "cfg.json").write_text(json.dumps({"name": "bad", "spec": bad}))
    message = tmp_path / "termination-log"
    run = subprocess.run([sys.executable, "-P", "-m", "interp_workloads.train", "--config", str(tmp_path / "cfg.json")],
                         env=os.environ | {"INTERP_TERMINATION_MESSAGE_PATH": str(message)}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 3, run.stderr[-2000:]
    reason = json.loads(message.read_text())
    assert reason["error"] == "ConfigError" and "saes[topk].hookPoint: 'resid_post.9'" in reason["message"]
