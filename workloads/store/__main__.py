"""``python -m interp_workloads.store verify PATH``: check a store's files against its manifest (exit 0 / 1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import StoreError
from .verify import verify_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.store", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check every file's size, sha256 and header against the manifest")
    verify.add_argument("path", type=Path, help="the store's root directory")
    verify.add_argument("--workers", type=int, default=4, help="files checked in parallel (default 4)")
    args = parser.parse_args(argv)
    try:
        manifest = verify_store(args.path, workers=args.workers)
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    hooks = ", ".join(hook.name for hook in manifest.hooks)
    print(f"{args.path}: ok: {manifest.tokens} tokens in {len(manifest.shards)} shards, hooks {hooks}, "
          f"{manifest.bytes} bytes verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
