"""python -m interp_workloads.train --config cfg.json|job.yaml — one rank of an SAETrainingJob (RANK of WORLD_SIZE).

Exit codes: 0 done (rank 0: every SAE exported and verified), 3 the input cannot work as given (config, store, hook
points, a foreign or damaged checkpoint folder, training that diverged again after a roll-back: retrying will not
help), 1 anything else (a dead peer, a timeout: the operator restarts the gang and it resumes from the checkpoint).
"""

from __future__ import annotations

import argparse

EXIT_INVALID_INPUT = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="cfg.json or an SAETrainingJob YAML file (default: $INTERP_CONFIG)")
    args = parser.parse_args(argv)

    from interp_operator import logs

    from ..progress import write_termination_message
    from .config import ConfigError, load_config

    logs.configure(component="train")  # first: even a refused config is reported in the log's own format
    log = logs.get_logger("interp_workloads.train")
    try:
        config = load_config(args.config)
    except ConfigError as err:
        log.error("invalid config", error=str(err))
        write_termination_message({"error": "InvalidConfig", "message": str(err)[:3000]})
        return EXIT_INVALID_INPUT
    logs.bind(job=config.name, rank=config.rank)

    from ..store.common import StoreError
    from .run import Trainer, TrainingDiverged

    try:
        result = Trainer(config).run()
    except (ConfigError, StoreError, TrainingDiverged) as err:
        log.error("cannot train", error=str(err), error_type=type(err).__name__)
        write_termination_message({"error": type(err).__name__, "message": str(err)[:3000]})
        return EXIT_INVALID_INPUT
    write_termination_message(result)
    log.info("done", **{k: v for k, v in result.items() if k != "saes"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
