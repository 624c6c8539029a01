"""ActivationDump throughput: Dump(...).run() end to end vs the bare forward over the same tokens, and SAELens.

Run from the repository root:  python bench/bench_dump.py   (--quick: a one-minute smoke run; see --help; results go
to docs/benchmarks.md)

One process, one random-weight GPT-2-shaped model, one corpus of random words (jsonl), the same number of tokens for
every method. Methods run interleaved in shuffled order, round by round (median and best of the rounds), so load on a
shared machine hits all of them alike:

- forward only: the same contexts, batch by batch, through ``model(input_ids)`` under ``torch.no_grad`` with no hooks
  (tokenised beforehand, not timed), once through the whole model and once through the base model cut after the hook's
  block (no LM head), which is where the dump stops;
- the dump: ``Dump(parse_config({"spec": ...})).run()``, all of it: model load, tokenisation, forward passes, shard
  writes, verification and manifest; with the shuffle off and on;
- the peer, when ``import sae_lens`` works: SAELens's ``CacheActivationsRunner.run()`` on a TransformerLens
  ``HookedTransformer`` of the same shape holding the same weights (built offline: the runner's model loader is replaced
  by one that returns that model; the runner has no override for it), reading the same corpus as text, one cached shard
  per dump shard; model load, tokenisation, forward passes and writes, like the dump.

The warm-up runs, one shard each, are checked before anything is timed: the dump stores the contexts the forward-only
rows run and exactly the activations ``capture`` returns for them, and SAELens caches what our model computes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

# The dump moves the model to a GPU when it sees one; this benchmark compares everything on the CPU.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from interp_operator.logs import configure as configure_logs
from interp_workloads.corpus import iter_documents, pack_contexts
from interp_workloads.dump.config import parse_config
from interp_workloads.dump.run import Dump
from interp_workloads.instrument import capture
from interp_workloads.models import LoadedModel, load_model
from interp_workloads.spec import ModelSpec
from interp_workloads.store.reader import ActivationStore
from interp_workloads.testing import CORPUS, build_tiny_model

hf_logging.set_verbosity_error()

Run = Callable[[int, Path], None]
"""Process the first ``tokens`` tokens of the corpus, writing (if anything) to ``output``, a new directory."""
Job = tuple[str, int]
"""(method, tokens)."""

FULL = "forward only, full model"
CUT = "forward only, cut after hook"
DUMP_OFF = "dump, shuffle off"
DUMP_ON = "dump, shuffle on"
PEER = "SAELens CacheActivationsRunner"


@dataclass(frozen=True)
class Setup:
    model_dir: Path
    corpus: Path
    work: Path
    lm: LoadedModel
    contexts: torch.Tensor
    """[contexts, context_length]: the packed corpus, exactly as the dump tokenises it."""
    context_length: int
    batch_size: int
    layer: int
    tokens_per_shard: int

    @property
    def hook(self) -> str:
        return f"resid_post.{self.layer}"

    def batches(self, tokens: int) -> list[torch.Tensor]:
        return list(self.contexts[: tokens // self.context_length].split(self.batch_size))


def write_corpus(path: Path, words: int, seed: int = 0) -> Path:
    """Documents of 20-200 random words of the tokenizer's training text (every word is at least one token)."""
    rng = random.Random(seed)
    vocabulary = CORPUS.split()
    with path.open("w") as out:
        while words > 0:
            length = rng.randint(20, 200)
            out.write(json.dumps({"text": " ".join(rng.choice(vocabulary) for _ in range(length))}) + "\n")
            words -= length
    return path


def forward_only(setup: Setup, truncated: bool) -> Run:
    model: torch.nn.Module = setup.lm.model
    if truncated:
        # The same weights, without the LM head and the blocks after the hook's (its final norm is kept: negligible).
        model = AutoModel.from_pretrained(setup.model_dir, num_hidden_layers=setup.layer + 1)

    def run(tokens: int, output: Path) -> None:
        with torch.no_grad():
            for ids in setup.batches(tokens):
                model(input_ids=ids, use_cache=False)

    return run


def dump_spec(setup: Setup, tokens: int, output: Path, shuffle: bool) -> dict[str, Any]:
    return {
        "model": {"storage": {"uri": f"file://{setup.model_dir}"}, "dtype": "float32"},
        "dataset": {"source": {"uri": f"file://{setup.corpus}"}, "format": "jsonl", "maxTokens": tokens},
        "contextLength": setup.context_length,
        "batchSize": setup.batch_size,
        "hookPoints": [setup.hook],
        "dtype": "float32",
        "tokensPerShard": setup.tokens_per_shard,
        "shuffle": {"enabled": shuffle, "seed": 0},
        "output": {"uri": f"file://{output}"},
    }


def dump(setup: Setup, shuffle: bool) -> Run:
    def run(tokens: int, output: Path) -> None:
        summary = Dump(parse_config({"spec": dump_spec(setup, tokens, output, shuffle)})).run()
        if summary.get("tokens") != tokens or not summary.get("verified"):
            raise RuntimeError(f"the dump stored {summary.get('tokens')} tokens, not {tokens}: {summary}")

    return run


def sae_lens_cache(setup: Setup) -> Run:
    """SAELens's CacheActivationsRunner with a HookedTransformer that holds our model's weights."""
    import sae_lens.cache_activations_runner as runner_module
    from datasets import Dataset
    from sae_lens import CacheActivationsRunner, CacheActivationsRunnerConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import AutoModelForCausalLM

    d_model = setup.lm.model.config.n_embd

    def hooked_transformer() -> HookedTransformer:
        hf_model = AutoModelForCausalLM.from_pretrained(setup.model_dir)
        hf = hf_model.config
        config = HookedTransformerConfig(
            n_layers=hf.n_layer, d_model=hf.n_embd, n_heads=hf.n_head, d_head=hf.n_embd // hf.n_head,
            d_mlp=hf.n_inner or 4 * hf.n_embd, n_ctx=hf.n_positions, d_vocab=hf.vocab_size,
            act_fn=hf.activation_function, normalization_type="LN", eps=hf.layer_norm_epsilon, device="cpu",
            default_prepend_bos=True)
        model = HookedTransformer(config, tokenizer=AutoTokenizer.from_pretrained(setup.model_dir))
        # What from_pretrained_no_processing does after fetching the weights: no folding, no centring.
        model.load_and_process_state_dict(convert_gpt2_weights(hf_model, config), fold_ln=False,
                                          center_writing_weights=False, center_unembed=False, fold_value_biases=False)
        return model.eval()

    def run(tokens: int, output: Path) -> None:
        with warnings.catch_warnings():
            # HookedTransformer's deprecation notice; "dataset is not tokenized", "fewer samples than tokens": meant.
            warnings.simplefilter("ignore")
            model = hooked_transformer()
            with setup.corpus.open() as lines:
                dataset = Dataset.from_dict({"text": [json.loads(line)["text"] for line in lines]})
            per_shard_bytes = setup.tokens_per_shard * d_model * 4
            config = CacheActivationsRunnerConfig(
                dataset_path=str(setup.corpus), model_name="bench-gpt2", model_batch_size=setup.batch_size,
                hook_name=f"blocks.{setup.layer}.hook_resid_post", d_in=d_model, training_tokens=tokens,
                context_size=setup.context_length, new_cached_activations_path=str(output), shuffle=False,
                dtype="float32", device="cpu", buffer_size_gb=(per_shard_bytes + 0.5) / 1e9, prepend_bos=True,
                streaming=False)
            if (planned := config.n_tokens_in_buffer * config.n_buffers) != tokens:
                raise RuntimeError(f"SAELens would cache {planned} tokens, not {tokens}")
            with mock.patch.object(runner_module, "load_model", return_value=model):
                cached = CacheActivationsRunner(config, override_dataset=dataset).run()
        if len(cached) * setup.context_length != tokens:
            raise RuntimeError(f"SAELens cached {len(cached)} contexts, not {tokens // setup.context_length}")

    return run


def check_dump(setup: Setup, store_dir: Path, tokens: int, *, shuffled: bool) -> None:
    store = ActivationStore(store_dir)
    contexts = setup.contexts[: tokens // setup.context_length]
    ids = torch.cat([store.shard(setup.hook, k).rows("token_ids") for k in range(len(store.manifest.shards))])
    if shuffled:
        if not torch.equal(ids.sort().values, contexts.reshape(-1).sort().values.to(ids.dtype)):
            raise AssertionError("the shuffled store does not hold the corpus's tokens")
        return
    if not torch.equal(ids, contexts.reshape(-1).to(ids.dtype)):
        raise AssertionError("the dump stored other tokens than the forward-only rows run")
    first = contexts[: setup.batch_size]
    expected = capture(setup.lm.model, {"input_ids": first}, [setup.hook])[setup.hook].reshape(first.numel(), -1)
    stored = store.shard(setup.hook, 0).rows("activations")[: first.numel()]
    torch.testing.assert_close(stored, expected, rtol=0, atol=0, msg="the dump stored other activations")


def check_sae_lens(setup: Setup, cache_dir: Path) -> None:
    from datasets import Dataset

    row = Dataset.load_from_disk(str(cache_dir)).with_format("torch")[0]
    ids = row["token_ids"].long()[None]
    ours = capture(setup.lm.model, {"input_ids": ids}, [setup.hook])[setup.hook][0]
    torch.testing.assert_close(row[f"blocks.{setup.layer}.hook_resid_post"], ours, rtol=1e-4, atol=1e-4,
                               msg="SAELens's HookedTransformer computes another model")


def time_rounds(setup: Setup, methods: dict[str, Run], jobs: list[Job], rounds: int) -> dict[Job, list[float]]:
    samples: dict[Job, list[float]] = {job: [] for job in jobs}
    order = list(jobs)
    output = setup.work / "output"
    for index in range(rounds):
        random.shuffle(order)
        for job in order:
            name, tokens = job
            start = time.perf_counter()
            methods[name](tokens, output)
            samples[job].append(time.perf_counter() - start)
            shutil.rmtree(output, ignore_errors=True)
        times = ", ".join(f"{name} {samples[(name, tokens)][-1]:.1f} s" for name, tokens in jobs
                          if tokens == max(t for _, t in jobs))
        print(f"  round {index + 1}/{rounds} (load {os.getloadavg()[0]:.1f}): {times}", flush=True)
    return samples


def warm_up_and_check(setup: Setup, methods: dict[str, Run]) -> None:
    """One shard through every method: first-call costs are not what we measure, and the outputs must be right."""
    tokens, output = setup.tokens_per_shard, setup.work / "output"
    for name, run in methods.items():
        run(tokens, output)
        if name in (DUMP_OFF, DUMP_ON):
            check_dump(setup, output, tokens, shuffled=name == DUMP_ON)
        elif name == PEER:
            check_sae_lens(setup, output)
        shutil.rmtree(output, ignore_errors=True)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return names[0] if names else platform.processor()


def build(args: argparse.Namespace, work: Path) -> Setup:
    model_dir = build_tiny_model("gpt2", work / "model", n_layers=args.layers, d_model=args.d_model,
                                 vocab_size=args.vocab)
    corpus = write_corpus(work / "corpus.jsonl", words=args.tokens + args.tokens // 8)
    lm = load_model(ModelSpec(model=str(model_dir)))
    needed = args.tokens // args.context
    packed = pack_contexts(iter_documents(corpus, "jsonl"), lm.tokenizer, args.context, max_contexts=needed)
    contexts = torch.stack([torch.from_numpy(ids).long() for ids, _ in packed])
    if len(contexts) != needed:
        raise RuntimeError(f"the corpus holds {len(contexts)} contexts, not {needed}")
    return Setup(model_dir=model_dir, corpus=corpus, work=work, lm=lm, contexts=contexts, context_length=args.context,
                 batch_size=args.batch, layer=args.layers - 1, tokens_per_shard=args.tokens_per_shard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8192 tokens, 1 round (under a minute)")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per run of each method")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens-per-shard", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=6, help="the hook is resid_post of the last block")
    parser.add_argument("--d-model", type=int, default=512)
    # 8192: the unembedding is ~18% of the full forward's FLOPs here (GPT-2 small: ~30%).
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--context", type=int, default=128, help="at most 128 (the tiny GPT-2's positions)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.rounds, args.tokens_per_shard = 8192, 1, 4096
    if args.tokens % args.tokens_per_shard or args.tokens_per_shard % args.context:
        parser.error("--tokens must be a multiple of --tokens-per-shard, and that a multiple of --context")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "INTERP_STATUS_PORT"):  # one rank, no status server
        os.environ.pop(name, None)
    torch.set_num_threads(args.threads)
    configure_logs(level="warning")
    try:
        import sae_lens  # noqa: F401

        peer: str | None = f"sae-lens {version('sae-lens')}, transformer-lens {version('transformer-lens')}"
    except ImportError as exc:
        peer = None
        print(f"SKIPPED SAELens peer: {exc} (pip install -e '.[bench]')")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-dump-") as tmp:
        setup = build(args, Path(tmp))
        methods: dict[str, Run] = {
            FULL: forward_only(setup, truncated=False),
            CUT: forward_only(setup, truncated=True),
            DUMP_OFF: dump(setup, shuffle=False),
            DUMP_ON: dump(setup, shuffle=True),
        }
        if peer:
            methods[PEER] = sae_lens_cache(setup)
        print(f"# GPT-2 shape, {args.layers} layers, d_model {args.d_model}, vocab {args.vocab}, fp32, CPU "
              f"({cpu_name()}, {os.cpu_count()} cores), {args.threads} threads, torch {torch.__version__}, "
              f"peer: {peer or 'none'}")
        print(f"# {args.tokens} tokens per run = {args.tokens // args.context} contexts of {args.context}, batch "
              f"{args.batch}, {args.tokens // args.tokens_per_shard} shards; hook {setup.hook}; {args.rounds} rounds",
              flush=True)
        warm_up_and_check(setup, methods)
        print("# warm-up outputs checked: same tokens and activations as the forward-only rows", flush=True)
        # One-shard runs of the methods compared at steady state: with the full runs they split a run's time into a
        # fixed part (model load, start-up, final verification) and a cost per token.
        short = [(name, args.tokens_per_shard) for name in (CUT, DUMP_OFF, PEER)
                 if name in methods and args.tokens_per_shard < args.tokens]
        samples = time_rounds(setup, methods, [(name, args.tokens) for name in methods] + short, args.rounds)
    report(args, samples, peer, (load_before, os.getloadavg()[0]))


def report(args: argparse.Namespace, samples: dict[Job, list[float]], peer: str | None,
           load: tuple[float, float]) -> None:
    # Other jobs on a shared machine only ever add time: the best round is the closest to the uncontended cost.
    stats = {"median": {job: statistics.median(values) for job, values in samples.items()},
             "best": {job: min(values) for job, values in samples.items()}}
    names = [name for name, tokens in samples if tokens == args.tokens]
    rates = {kind: {name: args.tokens / seconds[(name, args.tokens)] for name in names}
             for kind, seconds in stats.items()}
    median, best = rates["median"], rates["best"]
    print(f"\n{'method':<32}{'s/run':>7}{'best':>7}{'tokens/s':>10}{'best':>7}{'vs full fwd':>13}{'vs cut fwd':>12}")
    for name in names:
        job = (name, args.tokens)
        print(f"{name:<32}{stats['median'][job]:>7.2f}{stats['best'][job]:>7.2f}{median[name]:>10.0f}"
              f"{best[name]:>7.0f}{median[name] / median[FULL]:>13.3f}{median[name] / median[CUT]:>12.3f}")
    pairs = [(name, reference) for name in (DUMP_OFF, DUMP_ON) for reference in (FULL, CUT)]
    if peer:
        pairs += [(DUMP_OFF, PEER), (DUMP_ON, PEER)]
    ratios = {kind: {f"{name} / {ref}": rate[name] / rate[ref] for name, ref in pairs} for kind, rate in rates.items()}
    print("\ntokens/s ratios, median rounds (best rounds):")
    for pair, value in ratios["median"].items():
        print(f"  {pair}: {value:.3f} ({ratios['best'][pair]:.3f})")
    steady = steady_state(args, stats["median"])
    if steady:
        print(f"\nsteady state, from the {args.tokens_per_shard}- and {args.tokens}-token runs (median rounds):")
    for name, (fixed, rate) in steady.items():
        print(f"  {name:<32} fixed {fixed:5.2f} s, then {rate:6.0f} tokens/s = {rate / steady[CUT][1]:.3f} x cut fwd")
    print(f"# load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}")
    if args.json:
        runs = [{"method": name, "tokens": tokens, "seconds": values, "median_s": stats["median"][(name, tokens)],
                 "best_s": stats["best"][(name, tokens)]} for (name, tokens), values in samples.items()]
        results = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                               "python": platform.python_version(), "load_average": list(load)},
                   "peer": peer, "runs": runs, "tokens_per_s": rates, "ratios": ratios,
                   "steady_state": {name: {"fixed_s": fixed, "tokens_per_s": rate}
                                    for name, (fixed, rate) in steady.items()}}
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def steady_state(args: argparse.Namespace, seconds: dict[Job, float]) -> dict[str, tuple[float, float]]:
    """(fixed seconds, tokens/s after them) of each method timed at one shard and at the full size."""
    out = {}
    for name, tokens in seconds:
        if tokens < args.tokens:
            per_token = (seconds[(name, args.tokens)] - seconds[(name, tokens)]) / (args.tokens - tokens)
            out[name] = (seconds[(name, tokens)] - tokens * per_token, 1 / per_token)
    return out


if __name__ == "__main__":
    main()
