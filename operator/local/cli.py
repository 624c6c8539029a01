"""``interp-local``: run the local control plane in the foreground, or inject faults into a running one.

    interp-local up --kubeconfig ~/.kube/interp-local [--nodes 4 --gpus-per-node 1 | --node a:gpu=2,zone=z1 ...]
    interp-local fault --kubeconfig FILE kill-pod NAMESPACE/NAME [--container C] [--signal TERM]
    interp-local fault --kubeconfig FILE node-not-ready NODE [--keep-processes]
    interp-local fault --kubeconfig FILE node-ready NODE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from ..logs import configure, get_logger
from .nodes import NodeConfig, parse_node_spec
from .plane import ControlPlane, PlaneConfig

_log = get_logger("interp_operator.local.cli")


def _count(text: str) -> int:
    """A whole number >= 0, or argparse's usage error naming the flag."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _nodes(args: argparse.Namespace) -> list[NodeConfig]:
    if args.node:
        return [parse_node_spec(spec, i) for i, spec in enumerate(args.node)]
    return [NodeConfig(f"node-{i}", cpu=args.node_cpu, memory=args.node_memory, gpus=args.node_gpus)
            for i in range(args.nodes)]


async def _serve(config: PlaneConfig, kubeconfig: Path) -> None:
    plane = ControlPlane(config)
    await plane.start()
    plane.write_kubeconfig(kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    nodes = ",".join(n.name for n in config.nodes) if config.run_pods else "none"
    print(f"interp-local ready: server={plane.url} kubeconfig={kubeconfig} nodes={nodes} "
          f"state-dir={plane.state_dir}", flush=True)
    await stop.wait()
    _log.info("stopping: terminating pods")
    await plane.stop()


def _up(args: argparse.Namespace) -> int:
    try:
        nodes = _nodes(args)
    except ValueError as exc:
        print(f"interp-local: {exc}", file=sys.stderr)
        return 2
    config = PlaneConfig(host=args.host, port=args.port, nodes=nodes, run_pods=not args.api_only,
                         tls=not args.insecure_http, state_dir=Path(args.state_dir) if args.state_dir else None,
                         eviction_seconds=args.eviction_seconds, restart_backoff=args.restart_backoff)
    if config.state_dir is not None:
        config.state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(config, Path(args.kubeconfig).expanduser()))
    return 0


def _fault(args: argparse.Namespace) -> int:
    from .client import session_for

    base, session = session_for(Path(args.kubeconfig).expanduser())
    params: dict[str, str] = {}
    if args.action == "kill-pod":
        namespace, _, name = args.target.rpartition("/")
        path = f"/interp-local/v1/namespaces/{namespace or 'default'}/pods/{name}/kill"
        if args.container:
            params["container"] = args.container
        params["signal"] = args.signal
    else:
        path = f"/interp-local/v1/nodes/{args.target}/{'ready' if args.action == 'node-ready' else 'not-ready'}"
        if args.keep_processes:
            params["killProcesses"] = "false"
    response = session.post(base + path, params=params, verify=session.verify, timeout=30)
    body = response.json()
    print(body.get("message", response.text))
    return 0 if response.ok else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="interp-local", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--log-level", default=None)
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="serve a local control plane in the foreground until SIGTERM")
    up.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--nodes", type=_count, default=1, help="number of identical nodes (see --node)")
    up.add_argument("--node", action="append", default=[], metavar="SPEC",
                    help="a node: name:cpu=8,memory=32Gi,gpu=2,zone=z,rack=r,clique=c,label.k=v,"
                         "taint=k=v:NoSchedule (repeat for more)")
    up.add_argument("--node-cpu", default="8")
    up.add_argument("--node-memory", default="32Gi")
    up.add_argument("--node-gpus", "--gpus-per-node", type=_count, default=0,
                    help="nvidia.com/gpu of each of the --nodes nodes (default 0: pods asking for GPUs stay Pending)")
    up.add_argument("--state-dir", help="logs and volumes (default: a new temporary directory)")
    up.add_argument("--api-only", action="store_true", help="serve the API without running pods")
    up.add_argument("--insecure-http", action="store_true",
                    help="plain HTTP without authentication (kubectl sends tokens only over TLS)")
    up.add_argument("--eviction-seconds", type=float, default=30.0,
                    help="how long pods stay on a NotReady node before eviction")
    up.add_argument("--restart-backoff", type=float, default=1.0, help="first container restart delay")
    up.set_defaults(func=_up)
    fault = sub.add_parser("fault", help="inject a fault into a running control plane")
    fault.add_argument("--kubeconfig", required=True)
    fault.add_argument("action", choices=["kill-pod", "node-not-ready", "node-ready"])
    fault.add_argument("target", help="NAMESPACE/POD for kill-pod, NODE otherwise")
    fault.add_argument("--container")
    fault.add_argument("--signal", default="KILL")
    fault.add_argument("--keep-processes", action="store_true",
                       help="node-not-ready: a partition rather than a crash (processes keep running)")
    fault.set_defaults(func=_fault)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(level=args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
