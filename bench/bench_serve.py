"""Serving benchmark: 16 concurrent requests, each with its own steering vector, through the serving engine.

Measures, in one process on one model:
- batched (continuous batching, per-row vectors) vs the same requests served one by one (same engine);
- steering overhead: the same batch with and without the vectors, end to end (interleaved runs, the rounds cycling
  through every order) and per decode step (engines stepping in turn); medians of the per-round ratios with their
  quartiles, in CPU time of this process (on a shared CPU, time spent descheduled is not the engine's) and in wall
  time, next to a second plain arm (the noise floor); and steering's own work timed alone;
- p50 / p99 latency under a fixed Poisson load through the engine thread;
- a peer: Hugging Face ``generate`` with a steering forward hook, one request at a time (as hook-based tools run);
  its greedy tokens are checked against the engine's for the same request.

    PYTHONSAFEPATH=1 .venv/bin/python bench/bench_serve.py [--d-model 256 --layers 4 --new-tokens 32 --device cpu]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import random
import statistics
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from interp_workloads.instrument import Site, resolve
from interp_workloads.instrument.runtime import StandingHooks
from interp_workloads.models import load_model
from interp_workloads.serve.engine import Engine, GenerationRequest, TokenEvent
from interp_workloads.serve.metrics import Metrics
from interp_workloads.serve.row_edits import DecodeEdits, RowEdits, prompt_fns
from interp_workloads.serve.sampling import SamplingParams
from interp_workloads.serve.worker import Worker
from interp_workloads.spec import AddVector, ModelSpec
from interp_workloads.testing import CORPUS, build_tiny_model

HOOK = "resid_post.1"


def prompts(tokenizer, n: int, length: int) -> list[list[int]]:
    words = CORPUS.split()
    rng = random.Random(0)
    out = []
    for _ in range(n):
        ids = tokenizer(" ".join(rng.choice(words) for _ in range(length)))["input_ids"][:length]
        out.append(ids)
    return out


def vectors(n: int, width: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(1)
    return [(v / v.norm() * 4).tolist() for v in torch.randn(n, width, generator=g)]


def run_engine(engine: Engine, batch: list[tuple[list[int], list]], params: SamplingParams,
               together: bool) -> tuple[float, list[list[int]]]:
    outputs: list[list[int]] = [[] for _ in batch]
    start = time.perf_counter()

    def sink(i: int):  # type: ignore[no-untyped-def]
        return lambda e: outputs[i].append(e.token) if e.token is not None else None

    if together:
        for i, (ids, edits) in enumerate(batch):
            engine.submit(GenerationRequest(ids, params, edits, on_event=sink(i)))
        while engine.busy:
            engine.step()
    else:
        for i, (ids, edits) in enumerate(batch):
            engine.submit(GenerationRequest(ids, params, edits, on_event=sink(i)))
            while engine.busy:
                engine.step()
    return time.perf_counter() - start, outputs


class Clocks:
    """Wall and process CPU time of one call (a GPU run is timed by the wall clock only: its CPU time says little)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, fn) -> None:  # type: ignore[no-untyped-def]
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)


def paired(a: Clocks, b: Clocks, clock: str) -> tuple[float, float, float]:
    """Median and quartiles of a/b - 1 over the pairs, in percent."""
    ratios = [100 * (x / y - 1) for x, y in zip(getattr(a, clock), getattr(b, clock), strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def interleaved(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, Clocks]:
    """Each round runs every entry once, the rounds cycling through every order of the entries: drifts in load hit
    all alike, and each entry runs as often first, last and after each other one (a run may be slower after another
    kind of run)."""
    clocks = {name: Clocks() for name in runs}
    orders = itertools.cycle(itertools.permutations(runs))
    for _ in range(rounds):
        for name in next(orders):
            clocks[name].time(runs[name])
    return clocks


def decode_steps(lm, batch: list[tuple[list[int], list]], steps: int) -> Engine:  # type: ignore[no-untyped-def]
    """An engine whose batch is prefilled and has ``steps`` decode steps left, on its own copy of the model (the
    hooks of a steered batch stay registered while it runs; another engine must not pass through them)."""
    engine = Engine(copy.deepcopy(lm.model), lm.tokenizer)
    params = SamplingParams(max_new_tokens=steps + 2, temperature=0, ignore_eos=True)
    for ids, edits in batch:
        engine.submit(GenerationRequest(ids, params, edits))
    engine.step()  # two tokens: the prompt pass's and a first decode step's
    return engine


@dataclass
class _BatchRow:
    edits: RowEdits
    length: int


class _Block(torch.nn.Module):
    """Stands in for a transformer block (its output a tuple, like GPT-2's): costs nothing but the call itself."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x,)


def steering_alone(lm, steered: list[tuple[list[int], list]], repeats: int = 100) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Steering's own work, each piece timed alone as the best of many repeats (load on a shared machine only ever
    adds time): setting up a batch (vectors converted, the prompt pass's and the decode steps' edit functions and
    matrices built), and one decode step's share (edits looked up, a module called with the standing hook active
    and the add done, less the same module called bare)."""
    model, site = lm.model, resolve(lm.model, HOOK)
    width, batch = max(len(ids) for ids, _ in steered), len(steered)
    prompt = torch.randn(batch, width, model.config.hidden_size, device=model.device)
    step = torch.randn(batch, 1, model.config.hidden_size, device=model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def setup() -> DecodeEdits:
        rows = [RowEdits(len(ids), [(site, e) for e in edits]) for ids, edits in steered]
        prompt_fns(rows, width, {})[site](prompt)
        plan = DecodeEdits({})
        plan.step_fns([_BatchRow(r, r.prompt_len) for r in rows])[site](step)
        sync()
        return plan

    def best(fn) -> float:  # type: ignore[no-untyped-def]
        return min(timeit.repeat(fn, number=20, repeat=repeats)) / 20

    setup_s = best(setup)
    plan = setup()
    rows = [_BatchRow(RowEdits(len(ids), [(site, e) for e in edits]), len(ids)) for ids, edits in steered]
    holder = torch.nn.Module()
    holder.block = _Block()
    stand_in = Site("block", "output")
    hooks = StandingHooks(holder)
    at_stand_in = {stand_in: plan.step_fns(rows)[site]}

    def hooked() -> None:
        plan.step_fns(rows)  # the engine's per-step lookup; the mapping stays the same object, as there
        hooks.set(at_stand_in)
        with hooks.active():
            holder.block(step)
        sync()

    def bare() -> None:
        holder.block(step)
        sync()

    bare_s, hooked_s = [], []
    for _ in range(5):  # alternating, so both see the same load; the least disturbed of each
        bare_s.append(best(bare))
        hooked_s.append(best(hooked))
    return setup_s, min(hooked_s) - min(bare_s)


def peer_generate(lm, ids: list[int], vector: list[float], scale: float, new_tokens: int) -> list[int]:
    """Plain Hugging Face generate with a forward hook adding the vector to the block's output (every step)."""
    module = lm.model.get_submodule(resolve(lm.model, HOOK).module_path)
    add = scale * torch.tensor(vector, device=lm.model.device)

    def hook(_m, _a, output):  # type: ignore[no-untyped-def]
        if isinstance(output, tuple):
            return (output[0] + add.to(output[0].dtype), *output[1:])
        return output + add.to(output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        out = lm.model.generate(torch.tensor([ids], device=lm.model.device), max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    finally:
        handle.remove()
    return out[0, len(ids):].tolist()


def latency_under_load(engine: Engine, batch: list[tuple[list[int], list]], params: SamplingParams, rate: float,
                       total: int) -> list[float]:
    worker = Worker(engine, Metrics()).start()
    done: list[float] = []
    lock = threading.Lock()
    finished = threading.Event()
    rng = random.Random(2)
    try:
        for i in range(total):
            ids, edits = batch[i % len(batch)]
            submitted = time.perf_counter()

            def on_event(e: TokenEvent, submitted: float = submitted) -> None:
                if e.finish_reason is not None:
                    with lock:
                        done.append(time.perf_counter() - submitted)
                        if len(done) == total:
                            finished.set()

            worker.submit(GenerationRequest(ids, params, edits, on_event=on_event))
            time.sleep(rng.expovariate(rate))
        finished.wait(600)
    finally:
        worker.stop()
    return done


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-rounds", type=int, default=30,
                        help="interleaved rounds of the steered and the plain batch (each round: one run of each)")
    parser.add_argument("--overhead-steps", type=int, default=200,
                        help="decode steps of each engine for the per-step overhead")
    parser.add_argument("--load-rate", type=float, default=0.0, help="requests/s for the latency run (0: auto)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model("gpt2", tmp, d_model=args.d_model, n_layers=args.layers, n_positions=512)
        lm = load_model(ModelSpec(model=tmp, device=args.device))
    engine = Engine(lm.model, lm.tokenizer)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    ids = prompts(lm.tokenizer, args.requests, args.prompt_tokens)
    vecs = vectors(args.requests, args.d_model)
    steered = [(p, [AddVector(hook=HOOK, vector=v, scale=1.0)]) for p, v in zip(ids, vecs, strict=True)]
    plain: list[tuple[list[int], list]] = [(p, []) for p in ids]
    tokens = args.requests * args.new_tokens
    run_engine(engine, steered[:2], params, True)  # warm-up

    def best(fn) -> tuple[float, list[list[int]]]:  # type: ignore[no-untyped-def]
        runs = [fn() for _ in range(args.repeats)]
        return min(runs, key=lambda r: r[0])

    batched_s, batched_out = best(lambda: run_engine(engine, steered, params, True))
    serial_s, serial_out = best(lambda: run_engine(engine, steered, params, False))
    assert batched_out == serial_out, "batched and one-by-one outputs differ"
    # A second plain arm, timed like the others: how far two identical arms read apart (the noise floor).
    runs = interleaved({"steered": lambda: run_engine(engine, steered, params, True),
                        "plain": lambda: run_engine(engine, plain, params, True),
                        "plain again": lambda: run_engine(engine, plain, params, True)}, args.overhead_rounds)
    engines = {"steered": decode_steps(lm, steered, args.overhead_steps),
               "plain": decode_steps(lm, plain, args.overhead_steps),
               "plain again": decode_steps(lm, plain, args.overhead_steps)}
    steps = interleaved({name: e.step for name, e in engines.items()}, args.overhead_steps)
    setup_s, hook_s = steering_alone(lm, steered)
    peer_start = time.perf_counter()
    peer_out = [peer_generate(lm, p, v, 1.0, args.new_tokens) for p, v in zip(ids, vecs, strict=True)]
    peer_s = time.perf_counter() - peer_start
    matches = sum(a == b for a, b in zip(peer_out, batched_out, strict=True))
    rate = args.load_rate or 0.25 * args.requests / batched_s
    lat = latency_under_load(Engine(lm.model, lm.tokenizer), steered, params, rate, 3 * args.requests)

    print(f"model: gpt2-style d_model={args.d_model} layers={args.layers} on {args.device}, "
          f"{args.threads} thread(s); {args.requests} requests x {args.prompt_tokens} prompt + "
          f"{args.new_tokens} new tokens, one steering vector each at {HOOK}")
    print(f"batched (continuous batching):  {batched_s:7.3f} s  {tokens / batched_s:8.1f} tok/s")
    print(f"one by one (same engine):       {serial_s:7.3f} s  {tokens / serial_s:8.1f} tok/s  "
          f"-> batched is {serial_s / batched_s:.2f}x")
    print(f"peer: HF generate + hook, 1 at a time: {peer_s:7.3f} s  {tokens / peer_s:8.1f} tok/s  "
          f"-> batched is {peer_s / batched_s:.2f}x; peer tokens equal the engine's for {matches}/{args.requests}")
    for what, clocks, unit in (("whole batch", runs, "s"), ("decode step", steps, "ms")):
        scale = 1 if unit == "s" else 1e3
        for clock in ("cpu", "wall") if args.device == "cpu" else ("wall",):
            median, q1, q3 = paired(clocks["steered"], clocks["plain"], clock)
            floor, f1, f3 = paired(clocks["plain again"], clocks["plain"], clock)
            with_t = scale * statistics.median(getattr(clocks["steered"], clock))
            without_t = scale * statistics.median(getattr(clocks["plain"], clock))
            # Load only ever adds time, so the fastest runs are a second, steadier estimate.
            best_with, best_without, best_again = (min(getattr(clocks[k], clock))
                                                   for k in ("steered", "plain", "plain again"))
            print(f"steering overhead, {what} at batch {args.requests}, {clock} time: {median:+.1f}% "
                  f"(quartiles {q1:+.1f}% / {q3:+.1f}% over {len(clocks['plain'].wall)} interleaved rounds; medians "
                  f"{with_t:.3f} vs {without_t:.3f} {unit}; fastest runs {100 * (best_with / best_without - 1):+.1f}%)"
                  f"; plain vs plain again: {floor:+.1f}% ({f1:+.1f}% / {f3:+.1f}%; fastest runs "
                  f"{100 * (best_again / best_without - 1):+.1f}%)")
    clock = "cpu" if args.device == "cpu" else "wall"
    plain_run = statistics.median(getattr(runs["plain"], clock))
    plain_step = statistics.median(getattr(steps["plain"], clock))
    share = (setup_s + (args.new_tokens - 1) * hook_s) / plain_run
    print(f"steering's own work, timed alone: batch setup {1e3 * setup_s:.3f} ms, decode hook {1e6 * hook_s:.1f} us "
          f"per step ({100 * hook_s / plain_step:.2f}% of a plain step) -> {100 * share:.2f}% of a plain batch")
    print(f"latency at {rate:.2f} req/s Poisson, {len(lat)} requests: p50 {percentile(lat, 0.5):.3f} s  "
          f"p99 {percentile(lat, 0.99):.3f} s")


if __name__ == "__main__":
    main()
