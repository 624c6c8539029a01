"""python -m interp_workloads.serve --config cfg.json — one replica of an InterpInferenceService.

Exit codes: 3 the input cannot work as given (config, model path or family, an SAE or steering vector that does not
load or does not fit the model): the termination message names the reason and restarting will not help; 1 anything
else (the operator replaces the pod).
"""

from __future__ import annotations

import argparse
import os

EXIT_INVALID_INPUT = 3


def default_host() -> str:
    """Every address, so that kubectl port-forward (which dials the pod's loopback) reaches the server; pods that
    share one network namespace (interp-local, which sets INTERP_LOCAL_POD_DIR) bind their own IP instead, or two
    replicas would collide on the port."""
    if os.environ.get("INTERP_LOCAL_POD_DIR") and os.environ.get("POD_IP"):
        return os.environ["POD_IP"]
    return "0.0.0.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="cfg.json or an InterpInferenceService YAML (default: $INTERP_CONFIG)")
    parser.add_argument("--host", default=default_host(),
                        help="bind address (default: every address; on interp-local the pod's own IP)")
    parser.add_argument("--port", type=int, help="default: the spec's port")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--tokens-file", help="bearer tokens, one per line (default: $INTERP_AUTH_TOKENS_FILE)")
    parser.add_argument("--path", action="append", default=[], metavar="ROLE=PATH",
                        help="local path of a storage: model=..., saes/<name>=..., vectors/<name>=...")
    args = parser.parse_args(argv)

    from interp_operator import logs

    from ..dump.config import ConfigError
    from ..progress import write_termination_message
    from . import config as cfg

    logs.configure(component="serve")  # first: even a refused config is reported in the log's own format
    log = logs.get_logger("interp_workloads.serve")
    overrides = dict(p.split("=", 1) for p in args.path if "=" in p)
    try:
        config = cfg.load(args.config, overrides=overrides, tokens_file=args.tokens_file)
    except ConfigError as err:
        log.error("invalid config", error=str(err))
        write_termination_message({"error": "InvalidConfig", "message": str(err)[:3000]})
        return EXIT_INVALID_INPUT
    logs.bind(job=config.name)

    from .run import serve

    failure = serve(config, args.device, args.host, args.port or config.port)
    if failure is not None:
        log.error("cannot load", reason=failure.reason, error=str(failure))
        write_termination_message({"error": failure.reason, "message": str(failure)[:3000]})
        return EXIT_INVALID_INPUT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
