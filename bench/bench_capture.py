"""Capture overhead: interp_workloads.capture at 4 hook points vs the bare forward, output_hidden_states and nnsight.

Run from the repository root:  python bench/bench_capture.py   (see --help; results go to docs/benchmarks.md)

Every method runs on the same model and batch in the same process, interleaved round by round (median of the
rounds), so load on a shared machine hits all of them alike. Peak memory is measured per method in a fresh child
process (Linux VmHWM, reset just before the call) above the RSS held before the call.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from transformers.utils import logging as hf_logging

from interp_workloads.instrument import capture, resolve
from interp_workloads.models import LoadedModel, load_model
from interp_workloads.spec import ModelSpec
from interp_workloads.testing import build_tiny_model

hf_logging.set_verbosity_error()

HOOK_LAYERS = (1, 2, 3, 4)  # 4 hook points: resid_post of blocks 1-4 of 6 (two blocks after the last one)

Method = Callable[[], object]


def _methods(lm: LoadedModel, batch: dict[str, torch.Tensor], with_nnsight: bool) -> dict[str, Method]:
    model = lm.model
    hooks = [f"resid_post.{i}" for i in HOOK_LAYERS]
    blocks = model.get_submodule(lm.family.blocks)  # type: ignore[union-attr]

    def bare() -> object:
        with torch.no_grad():
            return model(**batch, use_cache=False).logits

    def hidden_states() -> object:
        with torch.no_grad():
            out = model(**batch, use_cache=False, output_hidden_states=True)
            return [out.hidden_states[i + 1] for i in HOOK_LAYERS]

    methods: dict[str, Method] = {
        "bare forward": bare,
        "output_hidden_states": hidden_states,
        "capture (full pass)": lambda: capture(model, batch, hooks, stop_early=False),
        "capture (stop early)": lambda: capture(model, batch, hooks, stop_early=True),
    }
    if with_nnsight:
        from nnsight import NNsight

        traced = NNsight(model)
        path = lm.family.blocks.split(".")  # type: ignore[union-attr]

        def nn_blocks():  # type: ignore[no-untyped-def]
            node = traced
            for part in path:
                node = getattr(node, part)
            return node

        def nnsight_capture(stop: bool) -> object:
            # nnsight runs the block's body itself; results leave it through an object created outside.
            saved: list[torch.Tensor] = []
            with torch.no_grad(), traced.trace(**batch, use_cache=False) as tracer:
                layers = nn_blocks()
                saved.extend(layers[i].output.save() for i in HOOK_LAYERS)
                if stop:
                    tracer.stop()
            return saved

        methods["nnsight (full pass)"] = lambda: nnsight_capture(False)
        methods["nnsight (stop early)"] = lambda: nnsight_capture(True)
    assert len(blocks) == 6
    pairs = zip(hooks, HOOK_LAYERS, strict=True)
    assert all(resolve(model, h).module_path == f"{lm.family.blocks}.{i}" for h, i in pairs)
    return methods


def _check_same_values(lm: LoadedModel, batch: dict[str, torch.Tensor], methods: dict[str, Method]) -> None:
    """All methods must record the same tensors, or the timing comparison means nothing."""
    reference = methods["output_hidden_states"]()
    for name, fn in methods.items():
        if name == "bare forward":
            continue
        got = fn()
        values = list(got.values()) if isinstance(got, dict) else list(got)  # type: ignore[call-overload]
        for ref, value in zip(reference, values, strict=True):  # type: ignore[arg-type]
            torch.testing.assert_close(value, ref, rtol=0, atol=0, msg=f"{name} recorded different values")


def _time(methods: dict[str, Method], rounds: int, reps: int) -> dict[str, float]:
    for fn in methods.values():
        fn()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(reps):
                methods[name]()
            samples[name].append((time.perf_counter() - start) / reps)
    return {name: statistics.median(s) for name, s in samples.items()}


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


def _probe_memory(args: argparse.Namespace) -> None:
    lm, batch = _setup(args.model_dir, args.batch, args.seq)
    fn = _methods(lm, batch, with_nnsight=args.method.startswith("nnsight"))[args.method]
    fn()  # first call: lazy initialisation is not what we measure
    # nnsight's results sit in reference cycles; without a collection here they would be freed (by a gc run)
    # inside the measured call and make its peak look lower by their size.
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS high-water mark
    kept = fn()
    peak = _status_kib("VmHWM")
    del kept
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def _memory(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        cmd = [sys.executable, "-P", __file__, "--probe", name, "--model-dir", args.model_dir,
               "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
        # A fixed mmap threshold makes glibc return every large tensor to the OS when freed, so VmHWM sees the
        # real peak instead of memory the allocator kept resident from the warm-up call.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        result = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        out[name] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
    return out


def _setup(model_dir: str, batch_size: int, seq: int) -> tuple[LoadedModel, dict[str, torch.Tensor]]:
    lm = load_model(ModelSpec(model=model_dir))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, lm.model.config.vocab_size, (batch_size, seq), generator=g)
    return lm, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gpt2")
    parser.add_argument("--d-model", type=int, default=256)
    # 8192 keeps the unembedding at ~30% of the FLOPs, as in GPT-2 small (50257 x 768 vs 12 blocks of 768).
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small-batch", action=argparse.BooleanOptionalAction, default=True,
                        help="also time small requests: 1x16 tokens, and 1x8 tokens on a d_model-64 model")
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--probe", dest="method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.method:
        _probe_memory(args)
        return
    try:
        import nnsight
        with_nnsight, peer = True, f"nnsight {nnsight.__version__}"
    except ImportError as exc:
        with_nnsight, peer = False, f"nnsight not installed ({exc}); pip install -e '.[bench]'"
    print(f"# {args.family}, 6 layers, fp32, CPU, {args.threads} threads, torch {torch.__version__}, peer: {peer}")
    print(f"# hooks: resid_post.{{{','.join(map(str, HOOK_LAYERS))}}}; values checked equal across methods")
    with tempfile.TemporaryDirectory() as main_dir, tempfile.TemporaryDirectory() as small_dir:
        build_tiny_model(args.family, main_dir, n_layers=6, d_model=args.d_model, vocab_size=args.vocab)
        scenarios = [(main_dir, f"d_model {args.d_model}, vocab {args.vocab}", args.batch, args.seq)]
        if args.small_batch:
            build_tiny_model(args.family, small_dir, n_layers=6, d_model=64)
            scenarios += [(main_dir, f"d_model {args.d_model}, vocab {args.vocab}", 1, 16),
                          (small_dir, "d_model 64, vocab 384 (fixed per-call cost)", 1, 8)]
        for index, (model_dir, label, batch_size, seq) in enumerate(scenarios):
            _scenario(args, with_nnsight, model_dir, label, batch_size, seq, with_memory=index == 0)


def _scenario(args: argparse.Namespace, with_nnsight: bool, model_dir: str, label: str, batch_size: int, seq: int,
              *, with_memory: bool) -> None:
    lm, batch = _setup(model_dir, batch_size, seq)
    methods = _methods(lm, batch, with_nnsight)
    _check_same_values(lm, batch, methods)
    reps = max(1, 512 // (batch_size * seq))
    times = _time(methods, args.rounds, reps)
    # Peak memory only for the large batch: at a few tokens it is allocator noise.
    probe = argparse.Namespace(**{**vars(args), "model_dir": model_dir, "batch": batch_size, "seq": seq})
    memory = _memory(probe, list(methods)) if with_memory else {}
    bare = times["bare forward"]
    print(f"\n## {label}: batch {batch_size} x {seq} tokens ({args.rounds} rounds x {reps} calls, median)")
    header = f"{'method':<24}{'ms/call':>10}{'+ms':>8}{'vs bare':>9}"
    print(header + (f"{'peak MiB':>10}{'vs bare':>9}" if with_memory else ""))
    for name, seconds in times.items():
        mem = f"{memory[name]:>10.1f}{memory[name] / memory['bare forward']:>9.3f}" if with_memory else ""
        print(f"{name:<24}{seconds * 1e3:>10.2f}{(seconds - bare) * 1e3:>8.2f}{seconds / bare:>9.3f}{mem}")
    if with_nnsight:
        full = times["nnsight (full pass)"] / times["capture (full pass)"]
        early = times["nnsight (stop early)"] / times["capture (stop early)"]
        print(f"speed-up vs nnsight: full pass {full:.2f}x, stop early {early:.2f}x")


if __name__ == "__main__":
    main()
