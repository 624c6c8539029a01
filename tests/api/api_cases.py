"""Shared by the API tests, the conformance tier and the e2e suite: examples, CRDs, the invalid catalogue."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def committed_crds() -> dict[str, dict[str, Any]]:
    """Committed CRDs by kind."""
    out = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = load_yaml(path)
        out[crd["spec"]["names"]["kind"]] = crd
    return out


def example_paths() -> list[Path]:
    return sorted((REPO / "examples").glob("*.yaml"))


def invalid_cases() -> list[dict[str, Any]]:
    return load_yaml(REPO / "tests" / "api" / "invalid_cases.yaml")


def build_case(case: dict[str, Any]) -> dict[str, Any]:
    return merge_patch(load_yaml(REPO / case["example"]), case["patch"])
