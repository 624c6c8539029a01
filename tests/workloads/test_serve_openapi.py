"""docs/openapi.json is the server app's own schema: regenerate it with
``python -m interp_workloads.serve.openapi --out docs/openapi.json`` when the API changes."""

from __future__ import annotations

import json
from pathlib import Path

from interp_workloads.serve.openapi import render, schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_matches_the_app():
    generated = schema()
    assert render(generated) == DOCS.read_text(), (
        "docs/openapi.json is stale: run python -m interp_workloads.serve.openapi --out docs/openapi.json")
    paths = json.loads(DOCS.read_text())["paths"]
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/generate", "/v1/forward", "/v1/attribute",
                 "/v1/vectors", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
