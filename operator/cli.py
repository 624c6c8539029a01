"""`interp-operator`: run the operator (kopf underneath) against the cluster of the current kubeconfig or pod."""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from . import __version__, logs

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _optional_path(value: str) -> Path | None:
    """A path, or none for an empty value (an unset chart value renders as an empty flag or variable)."""
    return Path(value) if value else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="interp-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0 disables)")
    parser.add_argument("--metrics-secure", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="serve /metrics over HTTPS to scrapers whose bearer token passes a TokenReview and may "
                             "get /metrics by a SubjectAccessReview (default: $INTERP_METRICS_SECURE, else off)")
    parser.add_argument("--metrics-cert-dir", type=_optional_path,
                        default=_optional_path(os.environ.get("INTERP_METRICS_CERT_DIR", "")),
                        help="directory with tls.crt and tls.key for --metrics-secure, reloaded when they change "
                             "(default: $INTERP_METRICS_CERT_DIR, else a self-signed certificate made at start)")
    parser.add_argument("--health-port", type=int, default=8081, help="liveness /healthz port (0 disables)")
    parser.add_argument("--peering", default=None, help="kopf peering name for one active operator among replicas")
    parser.add_argument("--priority", type=int, default=None,
                        help="this replica's kopf peering priority: the highest one reconciles, the others stand by "
                             "(default with --peering: a random one per process, since kopf pauses every peer "
                             "when the highest priority is shared)")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=None, choices=["auto", "json", "console"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.metrics_secure is None:
        raw = os.environ.get("INTERP_METRICS_SECURE", "").strip().lower()
        if raw not in _TRUE + _FALSE:
            parser.error(f"INTERP_METRICS_SECURE must be true or false, got {raw!r}")
        args.metrics_secure = raw in _TRUE
    if args.priority is not None and args.peering is None:
        parser.error("--priority needs --peering (priorities order the replicas of one peering)")
    if args.peering is not None and args.priority is None:
        args.priority = random.SystemRandom().randrange(1, 2**31)
    if args.metrics_cert_dir is not None and not args.metrics_secure:
        parser.error("--metrics-cert-dir needs --metrics-secure (the certificate serves HTTPS)")
    if args.metrics_cert_dir is not None and not args.metrics_cert_dir.is_dir():
        parser.error(f"--metrics-cert-dir {args.metrics_cert_dir} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format, component="operator")
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers with kopf)
    from .metrics_server import serve

    if args.metrics_port:
        try:
            serve(args.metrics_port, secure=args.metrics_secure, cert_dir=args.metrics_cert_dir)
        except ValueError as err:  # an unusable certificate directory
            raise SystemExit(f"interp-operator: {err}") from None
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority or 0,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
