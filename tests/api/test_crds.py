"""The committed CRDs are exactly what the models generate, and are structural, explainable and within limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_cases import REPO

from interp_operator import crdgen
from interp_operator.api import KINDS
from interp_operator.api.registry import BY_KIND

FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "discriminator"}


def schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += schema_nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += schema_nodes(node[key], f"{path}[]")
    return found


def test_committed_crds_match_the_models():
    stale = [
        str(path.relative_to(REPO))
        for path, content in crdgen.outputs(REPO / "crds", REPO / "charts" / "interp-operator").items()
        if not path.exists() or path.read_text() != content
    ]
    assert not stale, f"run `make crds`: out of date: {stale}"


def test_generation_is_idempotent(tmp_path):
    crdgen.main(["--out", str(tmp_path / "crds"), "--chart", str(tmp_path / "chart")])
    first = {p: p.read_text() for p in tmp_path.rglob("*.yaml")}
    crdgen.main(["--out", str(tmp_path / "crds"), "--chart", str(tmp_path / "chart")])
    assert {p: p.read_text() for p in tmp_path.rglob("*.yaml")} == first
    assert len(first) == 2 * len(KINDS)


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_schema_is_structural_and_explained(crds, kind):
    schema = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in schema_nodes(schema):
        assert not FORBIDDEN & node.keys(), f"{kind}{path}: non-structural keys {FORBIDDEN & node.keys()}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, f"{kind}{path}"
        else:
            assert "type" in node, f"{kind}{path}: no type"
        named_property = path.count(".") >= 2 or path in (".spec", ".status")
        if named_property and not path.endswith("[]"):
            assert node.get("description", "").strip(), f"{kind}{path}: no description for kubectl explain"
        if isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(node["exclusiveMinimum"], bool):
            pytest.fail(f"{kind}{path}: OpenAPI v3.0 needs a boolean exclusiveMinimum")


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_list_map_keys_are_required_or_defaulted(crds, kind):
    schema = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in schema_nodes(schema):
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], f"{kind}{path}.{key}"


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_names_subresources_and_columns(crds, kind):
    info, crd = BY_KIND[kind], crds[kind]
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{info.plural}.interp.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert names["categories"] == ["interp"]
    assert names["shortNames"] == list(info.short_names)
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert ("scale" in version["subresources"]) == (kind == "InterpInferenceService")
    schema = version["schema"]["openAPIV3Schema"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Age"} <= columns
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert node.get("type", "string") == column["type"] or column["type"] == "date", column


def test_scale_subresource_paths_exist(crds):
    version = crds["InterpInferenceService"]["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path in version["subresources"]["scale"].values():
        top, leaf = path.lstrip(".").split(".")
        assert leaf in schema["properties"][top]["properties"], path


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_crd_fits_in_a_last_applied_annotation(crds, kind):
    # client-side `kubectl apply` stores the whole object in an annotation limited to 262144 bytes
    size = len(json.dumps(crds[kind], separators=(",", ":")))
    assert size < 262144 // 2, f"{kind}: {size} bytes"


def test_helm_copy_is_switchable_and_kept():
    for info in KINDS:
        text = (REPO / "charts" / "interp-operator" / "templates" / "crds" / f"{info.plural}.yaml").read_text()
        assert "{{- if .Values.crds.enabled }}" in text and text.rstrip().endswith("{{- end }}")
        assert "helm.sh/resource-policy: keep" in text
