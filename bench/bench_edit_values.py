"""Validation cost of an edit's values: a captured activation as a Python list vs as the tensor itself.

Run from the repository root:  PYTHONSAFEPATH=1 .venv/bin/python bench/bench_edit_values.py   (see --help)

Both forms build the same ``Replace`` (activation patching with a captured [positions, d_model] activation) and
``AddVector``; the list form is what a JSON request carries, the tensor form what in-process code passes. The
methods alternate round by round and the median is reported, so load on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from interp_workloads.spec import AddVector, Replace


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    acts = torch.randn(args.positions, args.width) * (1.0 / args.width**0.5)
    as_list = acts.tolist()
    vector = acts[0]
    methods: dict[str, Callable[[], object]] = {
        "Replace(values=list)": lambda: Replace(hook="resid_post.6", values=as_list),
        "Replace(values=tensor)": lambda: Replace(hook="resid_post.6", values=acts),
        "AddVector(vector=list)": lambda: AddVector(hook="resid_post.6", vector=vector.tolist()),
        "AddVector(vector=tensor)": lambda: AddVector(hook="resid_post.6", vector=vector),
    }
    for fn in methods.values():
        fn()  # warm-up: first-call imports and allocations
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(_seconds(fn))
    result = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({"positions": args.positions, "width": args.width, "rounds": args.rounds,
                      "median_seconds": result}, indent=2))


if __name__ == "__main__":
    main()
