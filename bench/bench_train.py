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
2. The trainer end to end (``Trainer(config).run()`` on a synthetic store: b_dec initialisation, reads, steps,
   checkpoint, export and its verification): 8 TopK SAEs (F=2048) in one job vs 8 jobs of one SAE each.
"""

from __future__ import annotations

import argparse
import json
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


def _trainer_spec(store: Path, output: Path, names: list[str], steps: int) -> dict[str, Any]:
    return {
        "model": {"hubId": "bench/synthetic"}, "data": {"store": {"uri": f"file://{store}"}},
        "saes": [{"name": n, "hookPoint": "resid_post.0", "architecture": "topk", "dictSize": 2048, "k": K,
                  "seed": i} for i, n in enumerate(names)],
        "training": {"tokens": steps * BATCH, "batchSizeTokens": BATCH, "checkpointIntervalSteps": steps,
                     "metricsIntervalSteps": steps, "lrSchedule": {"warmupSteps": 1}},
        "output": {"uri": f"file://{output}"},
    }


def trainer_runs(store: Path, steps: int, jobs: int) -> None:
    """8 SAEs: in one job (``jobs`` 1) or in 8 jobs of one SAE each (``jobs`` 8)."""
    from interp_workloads.train.config import parse_config
    from interp_workloads.train.run import Trainer

    names = [f"sae-{i}" for i in range(8)]
    with tempfile.TemporaryDirectory() as out:
        groups = [names] if jobs == 1 else [[n] for n in names]
        for i, group in enumerate(groups):
            Trainer(parse_config({"spec": _trainer_spec(store, Path(out) / str(i), group, steps)})).run()


METHODS = {"ours": step_ours, "sparsify": step_sparsify, "saelens": step_saelens}


def run_one(method: str, data: Path, steps: int) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    warm = 2 if method in METHODS else 0
    if method in METHODS:
        METHODS[method](data, warm)
    started = time.perf_counter()
    if method in METHODS:
        METHODS[method](data, steps)
        tokens = steps * BATCH
    else:
        trainer_runs(data, steps, jobs=1 if method == "one-stream" else 8)
        tokens = steps * BATCH * 8
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": method, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_mib": peak}))


# -- the driver --------------------------------------------------------------------------------------------------------
def make_data(folder: Path, tokens: int) -> tuple[Path, Path]:
    """Planted sparse activations [tokens, D] as safetensors, and the same rows as an activation store."""
    import torch
    from safetensors.torch import save_file

    from interp_workloads.store.synthetic import write_synthetic_store

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
    write_synthetic_store(folder / "store", [BATCH] * (tokens // BATCH), {"resid_post.0": D}, values=values)
    return folder / "x.safetensors", folder / "store"


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
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(args.run, args.data, args.steps)
        return
    rounds, steps = (1, 3) if args.quick else (args.rounds, args.steps)
    peers = peer_python(args.peer_python)
    with tempfile.TemporaryDirectory() as folder:
        data, store = make_data(Path(folder), tokens=BATCH * (steps + 2))
        plan = [("ours", sys.executable, data), ("one-stream", sys.executable, store),
                ("separate", sys.executable, store)]
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
    one, separate = summary["one-stream"], summary["separate"]
    print(f"\n8 TopK SAEs (F=2048) by the trainer end to end: one job {one['median_s']:.1f} s, 8 jobs "
          f"{separate['median_s']:.1f} s ({separate['median_s'] / one['median_s']:.2f}x less wall time); peak RSS "
          f"{one['peak_rss_mib']:.0f} vs {separate['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
