"""interpctl (also kubectl interp): submit, watch and fetch the three resources from a terminal.

Exit codes, for scripts: 0 success; 1 the object failed (or another error); 2 bad usage or an invalid object;
3 not found; 4 timed out; 130 interrupted. -o json|yaml prints machine-readable output. --dry-run prints the
validated object without a cluster; --dry-run=server has the API server validate it too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..api import KINDS
from ..gang import naming
from .client import Client, Handle, WaitTimeout
from .resources import InvalidObject, body_of, dump_yaml, load_objects, resolve_kind
from .results import NotMounted
from .status import JobFailed, describe, table
from .transport import ApiError, NotFound

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
OUTPUTS = ("table", "json", "yaml", "name")


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see (an ambiguous name, say)."""


# -- output ----------------------------------------------------------------------------------------------------
def emit(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        items = data if isinstance(data, list) else [data]
        print(dump_yaml(items), end="")
    else:
        print(data)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "-"
    created = datetime.fromisoformat(timestamp)
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def row(handle: Handle, wide_namespace: bool) -> dict[str, str]:
    status = handle.raw.get("status") or {}
    progress = status.get("progress") or {}
    out = {"NAMESPACE": handle.namespace} if wide_namespace else {}
    out |= {"NAME": f"{handle.info.short_names[0]}/{handle.name}", "PHASE": status.get("phase") or "-",
            "PROGRESS": f"{progress['percent']:.0f}%" if "percent" in progress else "-",
            "RESTARTS": str(status.get("restarts", 0)),
            "AGE": age(handle.raw["metadata"].get("creationTimestamp"))}
    return out


# -- names -----------------------------------------------------------------------------------------------------
def find(client: Client, ref: str, kind: str | None = None) -> Handle:
    """``kind/name`` (any kind name kubectl takes) or a bare name looked up in the three kinds."""
    if "/" in ref:
        kind, _, name = ref.partition("/")
        return client.get(kind, name)
    if kind:
        return client.get(kind, ref)
    found = []
    for info in KINDS:
        try:
            found.append(client.get(info.kind, ref))
        except NotFound:
            continue
    if not found:
        raise NotFound(404, "NotFound", f"no ActivationDump, SAETrainingJob or InterpInferenceService named {ref!r} "
                                        f"in namespace {client.namespace}")
    if len(found) > 1:
        kinds = ", ".join(f"{h.info.short_names[0]}/{ref}" for h in found)
        raise UsageError(f"{ref!r} names several objects: say which one ({kinds})")
    return found[0]


# -- commands --------------------------------------------------------------------------------------------------
def _print_created(handles: list[Handle], args: argparse.Namespace) -> int:
    if args.output in ("json", "yaml"):
        emit([h.raw for h in handles] if len(handles) > 1 else handles[0].raw, args.output)
    else:
        verb = "created (server dry run)" if args.dry_run else "created"
        for h in handles:
            print(f"{h.info.short_names[0]}/{h.name}" + ("" if args.output == "name" else f" {verb}"))
    if getattr(args, "wait", False) and not args.dry_run:
        for h in handles:
            h.wait(timeout=args.timeout)
    return EXIT_OK


def _print_objects(objects: list[Any], args: argparse.Namespace) -> int:
    """A client-side dry run: the validated objects as they would be sent (YAML unless -o json or name)."""
    bodies = [body_of(obj, args.namespace or "default") for obj in objects]
    if args.output == "name":
        for body in bodies:
            print(f"{resolve_kind(body['kind']).short_names[0]}/{body['metadata']['name']}")
    else:
        emit(bodies if len(bodies) > 1 else bodies[0], "json" if args.output == "json" else "yaml")
    return EXIT_OK


def _create(client: Client | None, args: argparse.Namespace, objects: list[Any]) -> int:
    if args.dry_run == "client":
        return _print_objects(objects, args)
    assert client is not None
    return _print_created([client.create(obj, dry_run=args.dry_run == "server") for obj in objects], args)


def cmd_submit(client: Client | None, args: argparse.Namespace) -> int:
    if args.file == "-":
        text = sys.stdin.read()
    elif Path(args.file).is_file():
        text = Path(args.file).read_text()
    else:
        raise UsageError(f"{args.file}: no such file")
    return _create(client, args, load_objects(text))


def _labels(values: Sequence[str] | None) -> dict[str, str]:
    labels = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def _create_built(client: Client | None, args: argparse.Namespace, obj: Any) -> int:
    return _create(client, args, [obj])


def cmd_dump(client: Client | None, args: argparse.Namespace) -> int:
    from . import shortforms

    obj = shortforms.dump(args.name, model_location=args.model, dataset=args.dataset, hook_points=args.hook,
                          output=args.output_location, dataset_format=args.format, context_length=args.context_length,
                          batch_size=args.batch_size, tokens_per_shard=args.tokens_per_shard,
                          max_tokens=args.max_tokens, dtype=args.dtype, parallelism=args.parallelism, gpus=args.gpus,
                          labels=_labels(args.label))
    return _create_built(client, args, obj)


def cmd_train(client: Client | None, args: argparse.Namespace) -> int:
    from . import shortforms

    obj = shortforms.train(args.name, model_location=args.model, saes=args.sae, output=args.output_location,
                           tokens=args.tokens, activation_dump=args.dump, dataset=args.dataset, hook_point=args.hook,
                           batch_size_tokens=args.batch_size_tokens, learning_rate=args.lr, replicas=args.replicas,
                           gpus=args.gpus, checkpoint_interval=args.checkpoint_interval, labels=_labels(args.label))
    return _create_built(client, args, obj)


def cmd_serve(client: Client | None, args: argparse.Namespace) -> int:
    from . import shortforms

    obj = shortforms.serve(args.name, model_location=args.model, replicas=args.replicas,
                           auth_secret=args.auth_secret, no_auth=args.no_auth, saes=args.sae or (), port=args.port,
                           gpus=args.gpus, labels=_labels(args.label))
    return _create_built(client, args, obj)


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    one = bool(args.name) or "/" in (args.kind or "")
    if args.name:
        handles = [client.get(args.kind, args.name)]
    elif one:
        handles = [find(client, args.kind)]
    else:
        handles = client.list(args.kind, all_namespaces=args.all_namespaces, label_selector=args.selector)
    if args.output in ("json", "yaml"):
        emit(handles[0].raw if one else [h.raw for h in handles], args.output)
    elif args.output == "name":
        for h in handles:
            print(f"{h.info.short_names[0]}/{h.name}")
    elif handles:
        print(table([row(h, args.all_namespaces) for h in handles]))
    else:
        print(f"No resources found in {'any namespace' if args.all_namespaces else client.namespace}.",
              file=sys.stderr)
    return EXIT_OK


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    handle = find(client, args.name, args.kind)
    status = handle.status
    if args.output in ("json", "yaml"):
        emit(handle.raw.get("status") or {}, args.output)
    else:
        print(describe(handle.kind, handle.name, status))
    return EXIT_FAILED if handle.phase == "Failed" else EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    """One line (or JSON document) per change of the status, until the object is done."""
    handle = find(client, args.name, args.kind)
    last = None
    for current in handle.watch(timeout=args.timeout):
        status = current.raw.get("status") or {}
        if status == last:
            continue
        last = status
        if args.output in ("json", "yaml"):
            emit({"phase": status.get("phase"), "status": status}, "json" if args.output == "json" else "yaml")
        else:
            progress = status.get("progress") or {}
            print(f"{datetime.now(UTC):%H:%M:%S} {current.info.short_names[0]}/{current.name} "
                  f"{status.get('phase', '-')} {progress.get('percent', 0):.0f}% restarts={status.get('restarts', 0)}",
                  flush=True)
        if current.phase in current.done_phases:
            return EXIT_FAILED if current.phase == "Failed" else EXIT_OK
    return EXIT_TIMEOUT


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    handle = find(client, args.name, args.kind)
    status = handle.wait(timeout=args.timeout, progress=not args.quiet)
    if args.output in ("json", "yaml"):
        emit(status.to_json_dict(), args.output)
    else:
        print(describe(handle.kind, handle.name, status))
    return EXIT_OK


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    handle = find(client, args.name, args.kind)
    for line in handle.logs(rank=args.rank, follow=args.follow, attempt=args.attempt, previous=args.previous,
                            tail_lines=args.tail):
        print(line, flush=args.follow)
    return EXIT_OK


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    handle = find(client, args.name, args.kind)
    events = handle.events()
    if args.output in ("json", "yaml"):
        emit(events, args.output)
        return EXIT_OK
    rows = [{"LAST SEEN": age(e.get("lastTimestamp") or (e.get("metadata") or {}).get("creationTimestamp")),
             "TYPE": e.get("type", ""), "REASON": e.get("reason", ""), "MESSAGE": e.get("message", "")}
            for e in events]
    print(table(rows) if rows else f"No events for {handle.kind} {handle.name}.")
    return EXIT_OK


def _each(client: Client, args: argparse.Namespace, action: Callable[[Handle], Any], verb: str) -> int:
    for ref in args.names:
        handle = find(client, ref, args.kind)
        action(handle)
        print(f"{handle.info.short_names[0]}/{handle.name} {verb}")
    return EXIT_OK


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    return _each(client, args, lambda h: h.delete(), "deleted")


def cmd_suspend(client: Client, args: argparse.Namespace) -> int:
    return _each(client, args, lambda h: h.suspend(), "suspended")


def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    return _each(client, args, lambda h: h.resume(), "resumed")


def cmd_port_forward(client: Client, args: argparse.Namespace) -> int:
    handle = find(client, args.name, args.kind or "iis")
    local, _, remote = (args.ports or "").rpartition(":")
    forward = client.port_forward(handle.kind, handle.name, int(remote) if remote else None,
                                  local_port=int(local) if local else 0, rank=args.rank)
    print(f"Forwarding from {forward.url} -> {handle.info.short_names[0]}/{handle.name}", flush=True)
    forward.serve_forever()
    return EXIT_OK


def cmd_results(client: Client, args: argparse.Namespace) -> int:
    handle = find(client, args.name, args.kind)
    results = handle.results
    if args.action == "path":
        print(results.local_path())
        return EXIT_OK
    if args.action == "profiles":
        for path in results.profiles():
            print(path)
        return EXIT_OK
    copied = results.pull(args.destination or handle.name)
    if args.output in ("json", "yaml"):
        emit({"destination": str(args.destination or handle.name), "files": copied}, args.output)
    else:
        print(f"{len(copied)} files copied to {args.destination or handle.name}")
    return EXIT_OK


def cmd_profile(client: Client, args: argparse.Namespace) -> int:
    """Set the profile annotation; print where each rank's trace will be (and wait for it with --wait)."""
    handle = find(client, args.name, args.kind)
    if handle.kind == "InterpInferenceService":
        raise UsageError("profiling on demand is for jobs (ActivationDump, SAETrainingJob)")
    before: set[Path] = set()
    with contextlib.suppress(NotMounted):
        before = set(handle.results.profiles())
    handle.profile(args.steps)
    start, _, end = args.steps.partition("-")
    window = f"{start}-{end or int(start) + 1}"
    output = handle.raw["spec"]["output"]
    where = (f"pvc://{output['claimName']}/{output.get('subPath', '')}".rstrip("/") if "claimName" in output
             else output.get("uri", ""))
    print(f"{handle.info.short_names[0]}/{handle.name} annotated {naming.PROFILE_ANNOTATION}={args.steps}")
    print(f"traces: {where}/profiles/profile-rank<R>-steps-{window}.json")
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        fresh = sorted(set(handle.results.profiles()) - before)
        if fresh:
            for path in fresh:
                print(path)
            return EXIT_OK
        time.sleep(1)
    print(f"no trace appeared within {args.timeout}s (does the job reach step {start}?)", file=sys.stderr)
    return EXIT_TIMEOUT


def cmd_completion(client: Client | None, args: argparse.Namespace) -> int:
    print(completion_script(build_parser(), args.shell))
    return EXIT_OK


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A completion script of the subcommands, their options and the kind names, for bash or zsh."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    words: dict[str, list[str]] = {}
    for name, subparser in sub.choices.items():
        words[name] = sorted(o for a in subparser._actions for o in a.option_strings)
    commands = " ".join(words)
    kinds = " ".join(sorted({n for info in KINDS for n in (info.plural, *info.short_names)}))
    cases = "\n".join(f'        {name}) opts="{" ".join(opts)}" ;;' for name, opts in words.items())
    function = "_interpctl_complete"
    script = f"""{function}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="${{COMP_WORDS[1]}}" opts=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{commands}" -- "$cur")); return
    fi
    case "$cmd" in
{cases}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "{kinds}" -- "$cur"))
    fi
}}
complete -o default -F {function} interpctl kubectl-interp
"""
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


# -- the parser ------------------------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser, output: bool = True, kind: bool = True) -> None:
    if output:
        parser.add_argument("-o", "--output", choices=OUTPUTS, default="table", help="output format")
    if kind:
        parser.add_argument("--kind", help="kind of NAME when it is not written KIND/NAME (saejob, actdump, iis)")


def _creating(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", nargs="?", const="client", choices=("client", "server"),
                        help="print the validated object and create nothing (server: the API server validates too)")
    parser.add_argument("--wait", action="store_true", help="wait until it is done (progress bar)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds --wait waits at most")
    parser.add_argument("-l", "--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    _common(parser, kind=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interpctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    parser.add_argument("--mounts", help="where PVCs are mounted here: CLAIM=PATH,NS/CLAIM=PATH,*=PATTERN "
                                         "(default: $INTERP_MOUNTS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("submit", help="create the objects of a YAML file (- for stdin)")
    p.add_argument("file", metavar="FILE|-")
    _creating(p)
    p.set_defaults(run=cmd_submit)

    p = sub.add_parser("dump", help="create an ActivationDump")
    p.add_argument("name")
    p.add_argument("--model", required=True, help="hub id, or pvc://CLAIM/PATH of a model directory")
    p.add_argument("--dataset", required=True, help="pvc://CLAIM/PATH (or a URI) of the corpus")
    p.add_argument("--hook", action="append", required=True, help="hook point to store (repeatable)")
    p.add_argument("--output", dest="output_location", required=True, metavar="LOCATION",
                   help="pvc://CLAIM/PATH for the store")
    p.add_argument("--format", default="jsonl", choices=("jsonl", "text", "parquet"))
    p.add_argument("--context-length", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--tokens-per-shard", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--gpus", type=int, help="GPUs per pod")
    _creating_no_output(p)
    p.set_defaults(run=cmd_dump)

    p = sub.add_parser("train", help="create an SAETrainingJob")
    p.add_argument("name")
    p.add_argument("--model", required=True, help="hub id, or pvc://CLAIM/PATH of a model directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dump", help="a finished ActivationDump to read")
    source.add_argument("--dataset", help="pvc://CLAIM/PATH of a corpus: extract on the fly")
    p.add_argument("--sae", action="append", required=True,
                   help="ARCH[:k=K][:dict=N|:x=F][:l1=C][:hook=H][:name=N][:lr=R], e.g. topk:k=32:dict=16384")
    p.add_argument("--hook", help="hook point of SAEs that name none")
    p.add_argument("--output", dest="output_location", required=True, metavar="LOCATION",
                   help="pvc://CLAIM/PATH for checkpoints and SAEs")
    p.add_argument("--tokens", type=int, required=True, help="training tokens")
    p.add_argument("--batch-size-tokens", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--gpus", type=int, help="GPUs per pod")
    p.add_argument("--checkpoint-interval", type=int)
    _creating_no_output(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("serve", help="create an InterpInferenceService")
    p.add_argument("name")
    p.add_argument("--model", required=True)
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument("--auth-secret", help="Secret holding the accepted bearer tokens")
    auth.add_argument("--no-auth", action="store_true", help="serve without authentication")
    p.add_argument("--sae", action="append", metavar="NAME=HOOK@LOCATION", help="an SAE to load (repeatable)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--port", type=int)
    p.add_argument("--gpus", type=int)
    _creating_no_output(p)
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("get", help="list objects, or show one")
    p.add_argument("kind", nargs="?", help="saejob, actdump, iis (default: all three)")
    p.add_argument("name", nargs="?")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", help="label selector")
    _common(p, kind=False)
    p.set_defaults(run=cmd_get)

    for command, function, text in (("status", cmd_status, "phase, progress, metrics, checkpoint, failure"),
                                    ("events", cmd_events, "the object's events")):
        p = sub.add_parser(command, help=text)
        p.add_argument("name", metavar="[KIND/]NAME")
        _common(p)
        p.set_defaults(run=function)

    p = sub.add_parser("watch", help="print each status change until the object is done")
    p.add_argument("name", metavar="[KIND/]NAME")
    p.add_argument("--timeout", type=float)
    _common(p)
    p.set_defaults(run=cmd_watch)

    p = sub.add_parser("wait", help="a progress bar until the object is done; exit 1 when it failed")
    p.add_argument("name", metavar="[KIND/]NAME")
    p.add_argument("--timeout", type=float)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(run=cmd_wait)

    p = sub.add_parser("logs", help="logs of one rank's pod")
    p.add_argument("name", metavar="[KIND/]NAME")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--attempt", type=int, help="an earlier attempt's pod (when it still exists)")
    p.add_argument("-p", "--previous", action="store_true", help="the previous container run")
    p.add_argument("--tail", type=int, help="last N lines")
    _common(p, output=False)
    p.set_defaults(run=cmd_logs)

    for command, function, text in (("delete", cmd_delete, "delete objects"),
                                    ("suspend", cmd_suspend, "suspend (jobs: pods go, checkpoints stay; "
                                                             "services: scale to zero)"),
                                    ("resume", cmd_resume, "resume a suspended object")):
        p = sub.add_parser(command, help=text)
        p.add_argument("names", nargs="+", metavar="[KIND/]NAME")
        _common(p, output=False)
        p.set_defaults(run=function)

    p = sub.add_parser("port-forward", help="forward a local port to a service's server (or a job's pod)")
    p.add_argument("name", metavar="[KIND/]NAME")
    p.add_argument("ports", nargs="?", metavar="[LOCAL:]REMOTE", help="default: a free port to the service's port")
    p.add_argument("--rank", type=int, default=0, help="for jobs: the rank's pod")
    _common(p, output=False)
    p.set_defaults(run=cmd_port_forward)

    p = sub.add_parser("results", help="the outputs: pull (copy here), path (local mount), profiles (traces)")
    p.add_argument("action", choices=("pull", "path", "profiles"))
    p.add_argument("name", metavar="[KIND/]NAME")
    p.add_argument("destination", nargs="?", help="pull: target directory (default: ./NAME)")
    _common(p)
    p.set_defaults(run=cmd_results)

    p = sub.add_parser("profile", help="capture a torch.profiler trace of some steps; prints the trace path")
    p.add_argument("name", metavar="[KIND/]NAME")
    p.add_argument("--steps", required=True, help="a step or START-END (END exclusive)")
    p.add_argument("--wait", action="store_true", help="wait for the trace (needs the output mounted here)")
    p.add_argument("--timeout", type=float, default=300)
    _common(p, output=False)
    p.set_defaults(run=cmd_profile)

    p = sub.add_parser("completion", help="print a shell completion script: source <(interpctl completion bash)")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(run=cmd_completion, offline=True)
    return parser


def _creating_no_output(parser: argparse.ArgumentParser) -> None:
    """The creating options; ``--output`` of the short forms names the storage, so the format is ``-o`` only."""
    parser.add_argument("--dry-run", nargs="?", const="client", choices=("client", "server"),
                        help="print the validated object and create nothing (server: the API server validates too)")
    parser.add_argument("--wait", action="store_true", help="wait until it is done (progress bar)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds --wait waits at most")
    parser.add_argument("-l", "--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    parser.add_argument("-o", dest="output", choices=OUTPUTS, default="table", help="output format")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "offline", False) or getattr(args, "dry_run", None) == "client":
            return int(args.run(None, args))
        client = Client(args.kubeconfig, context=args.context, namespace=args.namespace, mounts=args.mounts)
        return int(args.run(client, args))
    except JobFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except WaitTimeout as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_TIMEOUT
    except NotFound as err:
        print(f"error: {err.message or err}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (InvalidObject, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE if err.status in (400, 409, 422) else EXIT_FAILED
    except (LookupError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
