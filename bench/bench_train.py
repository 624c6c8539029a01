"""SAE training throughput: our TopK step vs EleutherAI sparsify's and SAELens', and many SAEs from one stream.

Run from the repository root:  python bench/bench_train.py   (--quick: a smoke run; results go to docs/benchmarks.md)

The peers run in their own environment, ``.cache/bench-train`` (made on first use: CPU torch, then ``sae-lens`` and
``eai-sparsify`` from PyPI; ``--peer-python`` names another). Every method runs in a fresh process (so that its peak
RSS is its own), interleaved round by round in shuffled order; the tables give the median and best tokens/s.

1. One TopK step, fp32 on the CPU, d=512, F=8192, k=32, 4096-token batches, from the same activations (planted
   sparse codes, saved once as safetensors), each method with its own recipe's loss and Adam:
   - ours: ``SparseCoder`` forward (sparse encoder gradient, gather decoder), backward, the trainer's unit-norm
     gradient projection, Adam, renormalisation;
   - sparsify: ``sparsify.SparseCoder`` forward (its own fused TopK path), backward, Adam (as its Trainer does);
   - SAELens: ``TopKTrainingSAE.training_forward_pass``, backward, Adam.
2. 8 SAEs from one stream vs 8 separate runs: each job is what a pod runs, ``python -m interp_workloads.train``
   in a fresh process (interpreter and imports, model load or store open, b_dec initialisation, the steps,
   checkpoint, export and its verification, CE loss recovered on the fly), timed from start to exit; the 8 separate
   runs go one after the other, interleaved with the one-stream run round by round. Two cases:
   - on the fly: a random-weight GPT-2-shaped model (6 layers, d_model 512, vocab 8192: 19M non-embedding
     parameters, 4.5x one SAE's 4.2M, a model/dictionary ratio like GPT-2 small's with 16x SAEs) runs inside the
     trainer; 8 TopK SAEs (F=4096, k=32) on ``resid_post.5`` share its forward, the separate runs repeat it;
   - store: 8 TopK SAEs (F=4096, k=32) on a synthetic store (d=512); the shared part is reading and decoding it
     (and the fixed costs), the SAE steps are not shared.
   ``--only streams`` runs this part alone (about 2.5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".cache" / "bench-train"
D, F, K, BATCH = 512, 8192, 32, 4096


# -- the methods, each run in its own process (``--run METHOD``) -------------------------------------------------------
def _batches(data: Path, steps: int):
    from safetensors.torch import load_file

    x = load_file(str(data))["x"]
    for step in range(steps):
        start = (step * BATCH) % (x.shape[0] - BATCH + 1)
        yield x[start:start + BATCH]


def step_ours(data: Path, steps: int) -> None:
    import torch

    from interp_workloads.sae import CoderConfig, SparseCoder

    coder = SparseCoder(CoderConfig(architecture="topk", d_in=D, d_sae=F, k=K),
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(coder.parameters(), lr=2e-4)
    for x in _batches(data, steps):
        out = coder(x)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        coder.before_step_()
        optimizer.step()
        coder.after_step_()


def step_sparsify(data: Path, steps: int) -> None:
    import torch
    from sparsify import SaeConfig, SparseCoder

    coder = SparseCoder(D, SaeConfig(num_latents=F, k=K), device="cpu", dtype=torch.float32)
    optimizer = torch.optim.Adam(coder.parameters(), lr=2e-4)
    for x in _batches(data, steps):
        out = coder(x)
        optimizer.zero_grad(set_to_none=True)
        out.fvu.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        coder.set_decoder_norm_to_unit_norm()


def step_saelens(data: Path, steps: int) -> None:
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=F, k=K, device="cpu", dtype="float32"))
    optimizer = torch.optim.Adam(sae.parameters(), lr=2e-4)
    dead = torch.zeros(F, dtype=torch.bool)
    for step, x in enumerate(_batches(data, steps)):
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                                                       n_training_steps=step, is_logging_step=False))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()


# -- 8 SAEs from one stream vs 8 separate runs -------------------------------------------------------------------------
SAES, STREAM_D, STREAM_F = 8, 256, 1024
MODEL_LAYERS, MODEL_VOCAB, CONTEXT, CONTEXTS_PER_STEP = 8, 8192, 128, 16


def stream_spec(case: str, source: dict[str, Path], output: Path, names: list[str], steps: int) -> dict[str, Any]:
    """The job of ``names`` (indices into the 8 SAEs, each keeping its own seed) on ``case``'s stream."""
    hook = f"resid_post.{MODEL_LAYERS - 1}" if case == "onthefly" else "resid_post.0"
    saes = [{"name": f"sae-{i}", "hookPoint": hook, "architecture": "topk", "dictSize": STREAM_F, "k": K,
             "seed": i} for i in names]
    if case == "onthefly":
        batch = CONTEXT * CONTEXTS_PER_STEP
        model = {"storage": {"uri": f"file://{source['model']}"}, "dtype": "float32"}
        data = {"onTheFly": {"dataset": {"source": {"uri": f"file://{source['corpus']}"}, "format": "jsonl"},
                             "contextLength": CONTEXT, "batchSize": CONTEXTS_PER_STEP}}
    else:
        batch = BATCH
        model, data = {"hubId": "bench/synthetic"}, {"store": {"uri": f"file://{source['store']}"}}
    return {"name": "bench", "spec": {
        "model": model, "data": data, "saes": saes,
        "training": {"tokens": steps * batch, "batchSizeTokens": batch, "checkpointIntervalSteps": steps,
                     "metricsIntervalSteps": steps, "lrSchedule": {"warmupSteps": 1}},
        "output": {"uri": f"file://{output}"}}}


def make_stream_sources(folder: Path, steps: int) -> dict[str, Path]:
    """The on-the-fly model and corpus (enough contexts for the steps, the b_dec sample and the held-out tenth),
    and a synthetic store of planted sparse codes for the store case."""
    import torch

    from interp_workloads.store.synthetic import write_synthetic_store
    from interp_workloads.testing import CORPUS, build_tiny_model

    model = build_tiny_model("gpt2", folder / "model", n_layers=MODEL_LAYERS, d_model=STREAM_D,
                             vocab_size=MODEL_VOCAB)
    words, rng = CORPUS.split(), random.Random(0)
    # The steps' contexts and the held-out tenth (the downstream metric), no more: a real job trains on far more
    # tokens than the 64 contexts at most it holds out. The tokenizer makes about 2.6 tokens of a word.
    contexts = steps * CONTEXTS_PER_STEP * 10 // 9 + 2
    with open(folder / "corpus.jsonl", "w") as out:
        for _ in range(math.ceil(contexts * CONTEXT / 2.6 / CONTEXT)):
            out.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(CONTEXT))}) + "\n")
    generator = torch.Generator().manual_seed(0)
    atoms = torch.randn(STREAM_F, STREAM_D, generator=generator)
    atoms /= atoms.norm(dim=1, keepdim=True)

    def values(hook: str, rows: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(rows[0]) if rows.numel() else 0)
        n = rows.numel()
        idx = torch.randint(0, STREAM_F, (n, K), generator=g)
        return torch.zeros(n, STREAM_F).scatter_(1, idx, torch.rand(n, K, generator=g)) @ atoms

    write_synthetic_store(folder / "store", [BATCH] * (steps + 1), {"resid_post.0": STREAM_D}, values=values)
    return {"model": model, "corpus": folder / "corpus.jsonl", "store": folder / "store"}


def run_job(config: dict[str, Any], folder: Path) -> float:
    """One job as a pod runs it (a fresh ``python -m interp_workloads.train``); its wall time from start to exit."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(config))
    env = os.environ | {"PYTHONSAFEPATH": "1", "CUDA_VISIBLE_DEVICES": "", "INTERP_LOG_LEVEL": "warning",
                        "INTERP_TERMINATION_MESSAGE_PATH": str(folder / "message")}
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "interp_workloads.train", "--config", str(folder / "cfg.json")],
                         capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"training job failed:\n{run.stderr[-3000:]}")
    if not json.loads((folder / "message").read_text()).get("verified"):
        raise RuntimeError(f"training job did not verify its exports: {(folder / 'message').read_text()}")
    return seconds


def steady_steps(case: str, source: dict[str, Path], steps: int) -> dict[str, float]:
    """Seconds per step once a job runs (what dominates a long one), in this process: fetching a batch (the model's
    forward on the fly, reading and decoding on the store), each SAE's step alone, and all 8 SAEs' step on one
    batch. One stream pays one fetch and the 8-SAE step; 8 separate runs pay 8 fetches and 8 one-SAE steps."""
    import torch

    from interp_workloads.train.config import parse_config
    from interp_workloads.train.distributed import Collective
    from interp_workloads.train.onthefly import ModelStream
    from interp_workloads.train.run import Trainer

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(parse_config(stream_spec(case, source, Path(out), list(range(SAES)), steps + 1)))
        trainer.collective = Collective(0, 1, trainer.device, 600)
        store = trainer._open_data()
        trainer._build(store)
        members, batches = trainer.members, trainer._batches(store)
        fetch, alone, together = [], [], []
        next(batches)  # warm-up
        for _ in range(steps):
            if isinstance(store, ModelStream):
                store._cached = {}  # each separate run computes the batch itself
            started = time.perf_counter()
            _, activations = next(batches)
            fetch.append(time.perf_counter() - started)
            started = time.perf_counter()
            trainer.members = members
            trainer._step(activations)
            together.append(time.perf_counter() - started)
            started = time.perf_counter()
            for member in members:
                trainer.members = [member]
                trainer._step(activations)
            alone.append(time.perf_counter() - started)
    return {"fetch_s": statistics.median(fetch), "alone_s": statistics.median(alone),
            "together_s": statistics.median(together)}


def launch_steady(case: str, source: dict[str, Path], steps: int) -> dict[str, float]:
    env = os.environ | {"PYTHONSAFEPATH": "1", "CUDA_VISIBLE_DEVICES": "", "INTERP_LOG_LEVEL": "warning"}
    run = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run", f"steady-{case}", "--data",
                          json.dumps({k: str(v) for k, v in source.items()}), "--steps", str(steps)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    if run.returncode != 0:
        raise RuntimeError(f"steady-state {case} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def streams(cases: list[str], rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """Median wall time of the one-stream job and of the 8 separate jobs (summed), and the steady-state seconds
    per step of both, per case."""
    results: dict[str, dict[str, list[float]]] = {c: {"one": [], "separate": []} for c in cases}
    steady: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work:
        source = make_stream_sources(Path(work), max(steps, 4))
        for case in cases:
            steady[case] = launch_steady(case, source, 3)
            print(json.dumps({"case": case, "steady": steady[case]}), file=sys.stderr)
        for r in range(rounds):
            plan = [(case, kind) for case in cases for kind in ("one", "separate")]
            random.shuffle(plan)
            for case, kind in plan:
                out = Path(work) / f"{case}-{kind}-{r}"
                groups = [list(range(SAES))] if kind == "one" else [[i] for i in range(SAES)]
                seconds = sum(run_job(stream_spec(case, source, out / f"job-{j}" / "output", group, steps),
                                      out / f"job-{j}") for j, group in enumerate(groups))
                results[case][kind].append(seconds)
                print(json.dumps({"case": case, "kind": kind, "round": r, "seconds": round(seconds, 2)}),
                      file=sys.stderr)
    return {case: {kind: statistics.median(v) for kind, v in runs.items()} | steady[case]
            for case, runs in results.items()}


def print_streams(summary: dict[str, dict[str, float]], rounds: int, steps: int) -> None:
    print(f"\n{SAES} TopK SAEs (F={STREAM_F}, k={K}) from one stream vs {SAES} separate runs, each a fresh "
          f"`python -m interp_workloads.train`, {steps} steps, median of {rounds} rounds:")
    print("| case | tokens per job | one stream s | 8 separate runs s | less wall time | steady state: one stream "
          "s/step | 8 separate s/step | less time per step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for case, s in summary.items():
        tokens = steps * (CONTEXT * CONTEXTS_PER_STEP if case == "onthefly" else BATCH)
        one_step = s["fetch_s"] + s["together_s"]
        separate_step = SAES * s["fetch_s"] + s["alone_s"]
        print(f"| {case} | {tokens} | {s['one']:.1f} | {s['separate']:.1f} | {s['separate'] / s['one']:.2f}x | "
              f"{one_step:.2f} | {separate_step:.2f} | {separate_step / one_step:.2f}x |")
        print(f"<!-- {case}: fetch {s['fetch_s']:.3f} s, 8 SAEs together {s['together_s']:.3f} s, one at a time "
              f"{s['alone_s']:.3f} s per step -->")


METHODS = {"ours": step_ours, "sparsify": step_sparsify, "saelens": step_saelens}


def run_one(method: str, data: Path, steps: int) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    METHODS[method](data, 2)  # warm-up
    started = time.perf_counter()
    METHODS[method](data, steps)
    tokens = steps * BATCH
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": method, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_mib": peak}))


# -- the driver --------------------------------------------------------------------------------------------------------
def make_data(folder: Path, tokens: int) -> Path:
    """Planted sparse activations [tokens, D] as safetensors."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    atoms = torch.randn(F, D, generator=generator)
    atoms /= atoms.norm(dim=1, keepdim=True)

    def values(hook: str, rows: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(rows[0]) if rows.numel() else 0)
        n = rows.numel()
        idx = torch.randint(0, F, (n, K), generator=g)
        return torch.zeros(n, F).scatter_(1, idx, torch.rand(n, K, generator=g)) @ atoms

    x = torch.cat([values("x", torch.arange(s, min(s + BATCH, tokens))) for s in range(0, tokens, BATCH)])
    save_file({"x": x.contiguous()}, str(folder / "x.safetensors"))
    return folder / "x.safetensors"


def peer_python(given: str | None) -> str | None:
    if given:
        return given
    python = PEER_VENV / "bin" / "python"
    check = [str(python), "-c", "import sae_lens, sparsify"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    print(f"making {PEER_VENV} (CPU torch, sae-lens, eai-sparsify)", file=sys.stderr)
    torch_pin = os.environ.get("TORCH_PIN", "torch==2.13.0")
    for command in ([sys.executable, "-m", "venv", str(PEER_VENV)],
                    [str(PEER_VENV / "bin" / "pip"), "install", "-q", torch_pin],
                    [str(PEER_VENV / "bin" / "pip"), "install", "-q", "sae-lens>=6.54,<7", "eai-sparsify>=1.3"]):
        if subprocess.run(command).returncode != 0:
            print(f"SKIPPED peers: {' '.join(command)} failed", file=sys.stderr)
            return None
    return str(python)


def launch(python: str, method: str, data: Path, steps: int) -> dict[str, Any]:
    env = os.environ | {"PYTHONSAFEPATH": "1", "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1",
                        "INTERP_LOG_LEVEL": "warning"}
    run = subprocess.run([python, str(Path(__file__).resolve()), "--run", method, "--data", str(data),
                          "--steps", str(steps)], capture_output=True, text=True, env=env, cwd=REPO)
    if run.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method and round")
    parser.add_argument("--peer-python", help="a python with sae_lens and sparsify (default: .cache/bench-train)")
    parser.add_argument("--only", choices=("steps", "streams"), help="one part alone (default: both)")
    parser.add_argument("--streams", default="onthefly,store", help="cases of part 2 (onthefly, store)")
    parser.add_argument("--stream-rounds", type=int, default=1)
    parser.add_argument("--stream-steps", type=int, default=6, help="steps of every job of part 2")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run and args.run.startswith("steady-"):
        source = {k: Path(v) for k, v in json.loads(str(args.data)).items()}
        print(json.dumps(steady_steps(args.run.removeprefix("steady-"), source, args.steps)))
        return
    if args.run:
        run_one(args.run, Path(args.data), args.steps)
        return
    rounds, steps = (1, 3) if args.quick else (args.rounds, args.steps)
    if args.only != "steps":
        stream_steps = 2 if args.quick else args.stream_steps
        summary = streams(args.streams.split(","), args.stream_rounds, stream_steps)
        print_streams(summary, args.stream_rounds, stream_steps)
        if args.only == "streams":
            return
    peers = peer_python(args.peer_python)
    with tempfile.TemporaryDirectory() as folder:
        data = make_data(Path(folder), tokens=BATCH * (steps + 2))
        plan = [("ours", sys.executable, data)]
        if peers:
            plan += [("sparsify", peers, data), ("saelens", peers, data)]
        results: dict[str, list[dict[str, Any]]] = {m: [] for m, _, _ in plan}
        for _ in range(rounds):
            random.shuffle(plan)
            for method, python, source in plan:
                results[method].append(launch(python, method, source, steps))
                print(json.dumps(results[method][-1]), file=sys.stderr)
    summary = {m: {"median_tok_s": statistics.median(r["tokens_per_s"] for r in runs),
                   "best_tok_s": max(r["tokens_per_s"] for r in runs),
                   "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                   "median_s": statistics.median(r["seconds"] for r in runs)} for m, runs in results.items()}
    print(f"\nTopK d={D} F={F} k={K}, {BATCH}-token batches, fp32, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {os.environ.get('BENCH_THREADS', os.cpu_count())}, {rounds} rounds "
          f"x {steps} steps")
    print("| method | median tok/s | best tok/s | peak RSS MiB | ours / method (median) |")
    print("|---|---|---|---|---|")
    for method in ("ours", "sparsify", "saelens"):
        if method in summary:
            s = summary[method]
            ratio = summary["ours"]["median_tok_s"] / s["median_tok_s"]
            print(f"| {method} | {s['median_tok_s']:.0f} | {s['best_tok_s']:.0f} | {s['peak_rss_mib']:.0f} | "
                  f"{ratio:.2f}x |")


if __name__ == "__main__":
    main()
