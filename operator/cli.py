"""`interp-operator`: run the operator (kopf underneath) against the cluster of the current kubeconfig or pod."""

from __future__ import annotations

import argparse

from . import __version__, logs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="interp-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0 disables)")
    parser.add_argument("--health-port", type=int, default=8081, help="liveness /healthz port (0 disables)")
    parser.add_argument("--peering", default=None, help="kopf peering name for one active operator among replicas")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=None, choices=["auto", "json", "console"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format, component="operator")
    import kopf
    from prometheus_client import start_http_server

    from . import handlers  # noqa: F401  (registers the handlers with kopf)

    if args.metrics_port:
        start_http_server(args.metrics_port)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
