"""Gang self-test: every rank joins torch.distributed, all-reduces, and advances a resumable step counter.

Run it as the workload of any kind (operator env ``INTERP_WORKLOAD_MODULES=SAETrainingJob=interp_workloads.probe``)
to check that a cluster's gangs can rendezvous before spending GPU hours, or standalone:

    python -m interp_workloads.probe --config cfg.json      # one process, world size 1

It honours the operator's contract: the config file (``INTERP_CONFIG``), torch.distributed's env:// rendezvous
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), exit code 3 for an invalid config, and resuming from
the last checkpoint at whatever world size the new attempt has. The checkpoint is ``probe-checkpoint.json`` in the
output storage (``INTERP_PATH_OUTPUT``, else ``paths.output`` of the config, else the working directory), written
atomically by rank 0. Rank 0 ends by writing a termination message with ``"verified": true`` once every step's
all-reduce checked out, so the operator's success check of any kind passes on a gang that works.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

EXIT_INVALID_CONFIG = 3
CHECKPOINT = "probe-checkpoint.json"


def load_config(path: str | None) -> dict[str, Any]:
    path = path or os.environ.get("INTERP_CONFIG")
    if not path:
        raise ValueError("no config: pass --config or set INTERP_CONFIG")
    config = json.loads(Path(path).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the config must be a JSON object")
    probe = config.get("probe", {})
    steps = int(os.environ.get("INTERP_PROBE_STEPS", probe.get("steps", 3)))
    step_seconds = float(os.environ.get("INTERP_PROBE_STEP_SECONDS", probe.get("stepSeconds", 0.2)))
    if steps < 1 or step_seconds < 0:
        raise ValueError(f"steps must be >= 1 and stepSeconds >= 0, got {steps} and {step_seconds}")
    return config | {"probe": {"steps": steps, "stepSeconds": step_seconds}}


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def run(config: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from interp_operator import logs

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    logs.configure(job=config.get("name"), namespace=config.get("namespace"), rank=rank, component="probe")
    log = logs.get_logger("interp_workloads.probe")
    output = Path(os.environ.get("INTERP_PATH_OUTPUT") or config.get("paths", {}).get("output") or ".")
    checkpoint = output / CHECKPOINT
    if world > 1:
        # torch's C++ store resolves names with libc; resolving here also honours resolvers that only Python sees
        # (interp-local's cluster hosts file) and fails early with a clear error when the name does not resolve.
        os.environ["MASTER_ADDR"] = socket.gethostbyname(os.environ["MASTER_ADDR"])
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=120))
    try:
        state = {"step": 0, "worldSizes": []}
        if rank == 0 and checkpoint.exists():
            state = json.loads(checkpoint.read_text())
        if world > 1:  # every rank resumes where rank 0's checkpoint says, even while rank 0 overwrites it
            step = torch.tensor([state["step"]])
            dist.broadcast(step, src=0)
            state["step"] = int(step.item())
        state["worldSizes"] = [*state["worldSizes"], world]
        if rank == 0:
            write_atomically(checkpoint, state)
        log.info("joined", world_size=world, host=socket.gethostname(), resumed_at_step=state["step"])
        for _ in range(state["step"], config["probe"]["steps"]):
            value = torch.tensor([float(rank + 1)])
            if world > 1:
                dist.all_reduce(value)
            expected = world * (world + 1) / 2
            if value.item() != expected:
                raise RuntimeError(f"all_reduce gave {value.item()}, expected {expected}")
            state["step"] += 1
            if rank == 0:
                write_atomically(checkpoint, state)
            log.info("step", step=state["step"], all_reduce=value.item())
            time.sleep(config["probe"]["stepSeconds"])
        if world > 1:
            dist.barrier()
    finally:
        if world > 1:
            dist.destroy_process_group()
    log.info("done", steps=state["step"], world_sizes=state["worldSizes"])
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $INTERP_CONFIG)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as err:
        from interp_operator import logs

        logs.configure(component="probe")
        logs.get_logger("interp_workloads.probe").error("invalid config", error=str(err))
        return EXIT_INVALID_CONFIG
    from .progress import write_termination_message

    state = run(config)
    if int(os.environ.get("RANK", 0)) == 0:
        write_termination_message({"verified": True, "selfTest": "probe", "steps": state["step"],
                                   "worldSizes": state["worldSizes"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
