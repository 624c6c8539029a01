"""python -m interp_workloads.dump --config cfg.json — one rank of an ActivationDump (RANK of WORLD_SIZE from env).

Exit codes: 0 done (rank 0: the store's manifest is written and verified), 3 the input cannot work as given (config,
corpus, hook points, model family, a conflicting or corrupt store: retrying will not help), 1 anything else (the
operator restarts the pod, and it resumes).
"""

from __future__ import annotations

import argparse

EXIT_INVALID_INPUT = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.dump", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $INTERP_CONFIG)")
    args = parser.parse_args(argv)

    from interp_operator import logs

    from ..corpus import CorpusError
    from ..instrument import HookPointError, UnsupportedModelError
    from ..progress import write_termination_message
    from ..store.files import StoreError
    from .config import ConfigError, load_config

    logs.configure(component="dump")  # first: even a refused config is reported in the log's own format
    log = logs.get_logger("interp_workloads.dump")
    try:
        config = load_config(args.config)
    except ConfigError as err:
        log.error("invalid config", error=str(err))
        write_termination_message({"error": "InvalidConfig", "message": str(err)[:3000]})
        return EXIT_INVALID_INPUT
    logs.bind(job=config.name, rank=config.rank)

    from .run import Dump

    try:
        result = Dump(config).run()
    except (ConfigError, CorpusError, HookPointError, UnsupportedModelError, StoreError) as err:
        log.error("invalid input", error=str(err), error_type=type(err).__name__)
        write_termination_message({"error": type(err).__name__, "message": str(err)[:3000]})
        return EXIT_INVALID_INPUT
    write_termination_message(result)
    log.info("done", **{k: v for k, v in result.items() if k != "hookPoints"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
