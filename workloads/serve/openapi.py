"""The server's OpenAPI schema as JSON: ``python -m interp_workloads.serve.openapi [--out docs/openapi.json]``.

The schema is the app's own (``FastAPI.openapi()``); it does not depend on the model, so the app is built on a tiny
random-weight model written to a temporary directory. ``tests/workloads/test_serve_openapi.py`` fails when the
committed docs/openapi.json drifts from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ..models import load_model
from ..spec import ModelSpec
from ..testing import build_tiny_model
from .app import Tokens, create_app
from .server import Limits, Server


def schema() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        lm = load_model(ModelSpec(model=str(build_tiny_model("gpt2", directory)), device="cpu"))
    server = Server(lm=lm, saes={}, sae_hooks={}, limits=Limits(), model_name="interp-serve")
    return create_app(server, Tokens(None)).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.serve.openapi",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = render(schema())
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
