"""Generate the CustomResourceDefinitions from the API models (``make crds``).

pydantic's JSON schema is turned into a Kubernetes structural schema: references inlined, ``Optional`` unions
flattened, int-or-string marked, titles and ``additionalProperties: false`` dropped, OpenAPI v3.0 exclusive bounds.
The result is written to crds/ and, wrapped for Helm, to the chart's templates/crds/.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from .api.base import INT_OR_STRING_MARK
from .api.registry import GROUP, KINDS, VERSION, KindInfo

# Keys of pydantic's JSON schema with no meaning (or no place) in a structural schema.
_DROPPED = {"title", "$defs", "discriminator"}

HELM_HEADER = "{{- if .Values.crds.enabled }}\n"
_KEY_ORDER = ("description", "type", "format", "enum", "default")


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated sub-schemas (StorageRef, say) are written out in full: anchors would hinder reading and diffing."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_NoAliasDumper, sort_keys=False, width=120, allow_unicode=True)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Description and type first, nested properties last: easier to read than pydantic's order."""
    head = {k: node[k] for k in _KEY_ORDER if k in node}
    tail = {k: v for k, v in node.items() if k not in head and k not in ("properties", "items", "additionalProperties")}
    nested = {k: node[k] for k in ("properties", "items", "additionalProperties") if k in node}
    return head | tail | nested
HELM_FOOTER = "{{- end }}\n"
# The chart's standard labels (name, instance, version, managed-by, part-of) on the chart's copy of each CRD.
CHART_LABELS = '{{- include "interp-operator.commonLabels" . | nindent 4 }}'


class SchemaError(ValueError):
    """The models produce a schema the API server would not accept as structural."""


def structural(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Convert one pydantic JSON-schema node (and its children) into a structural OpenAPI v3 schema."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        # Sibling keys (the field's own description and default) win over the referenced model's.
        node = {**target, **node}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if node.get(INT_OR_STRING_MARK) or _is_int_or_string(variants):
            node.pop(INT_OR_STRING_MARK, None)
            variants = []
            node[INT_OR_STRING_MARK] = True
        elif len(variants) == 1:
            node = {**variants[0], **node}
        else:
            raise SchemaError(f"{path or '<root>'}: unions other than Optional[X] and int-or-string are not structural")
        return structural(node, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = structural(value, defs, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings wrap at the source line length; kubectl explain re-wraps
        else:
            out[key] = value
    if out.get(INT_OR_STRING_MARK):
        out.pop("type", None)
    elif "type" not in out:
        raise SchemaError(f"{path or '<root>'}: no type in {sorted(out)}")
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return _ordered(out)


def _is_int_or_string(variants: list[dict[str, Any]]) -> bool:
    return sorted(v.get("type", "") for v in variants) == ["integer", "string"]


def open_api_schema(info: KindInfo) -> dict[str, Any]:
    """The openAPIV3Schema of one kind: apiVersion, kind, metadata, spec (required) and status."""
    fields = info.model.model_fields
    spec_model = fields["spec"].annotation
    status_model = next(a for a in fields["status"].annotation.__args__ if a is not type(None))  # type: ignore[union-attr]
    schema: dict[str, Any] = {
        "type": "object",
        "description": info.model.__doc__.strip() if info.model.__doc__ else info.kind,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource."},
            "metadata": {"type": "object"},
            "spec": _model_schema(spec_model, "spec"),  # type: ignore[arg-type]
            "status": _model_schema(status_model, "status"),
        },
    }
    root_rules = [{"rule": r.rule, "message": r.message} for r in info.model.all_cel_rules()]
    if root_rules:
        schema["x-kubernetes-validations"] = root_rules
    return schema


def _model_schema(model: Any, path: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return structural(raw, defs, path)


def crd(info: KindInfo) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": open_api_schema(info)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [c.to_crd() for c in info.printer_columns],
    }
    if info.scale:
        version["subresources"]["scale"] = dict(info.scale)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": {"app.kubernetes.io/part-of": "interp-operator"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [version],
        },
    }


def render(info: KindInfo) -> str:
    header = "# Generated by `make crds` from interp_operator.api; do not edit.\n"
    return header + _dump(crd(info))


def render_for_chart(info: KindInfo) -> str:
    """The CRD as a chart template: switchable with crds.enabled, kept on uninstall (deleting a CRD deletes all CRs)."""
    body = copy.deepcopy(crd(info))
    body["metadata"]["labels"] = {CHART_LABELS: None}
    body["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
    text = _dump(body).replace(f"    '{CHART_LABELS}': null\n", f"    {CHART_LABELS}\n")
    header = "# Generated by `make crds` from interp_operator.api; do not edit.\n"
    return header + HELM_HEADER + text + HELM_FOOTER


def outputs(out_dir: Path, chart_dir: Path | None) -> dict[Path, str]:
    """Every generated file and its content."""
    files = {out_dir / f"{GROUP}_{info.plural}.yaml": render(info) for info in KINDS}
    if chart_dir is not None:
        files |= {chart_dir / "templates" / "crds" / f"{info.plural}.yaml": render_for_chart(info) for info in KINDS}
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("crds"), help="directory for the plain CRDs")
    parser.add_argument("--chart", type=Path, default=None, help="chart directory to write templates/crds/ into")
    args = parser.parse_args(argv)
    for path, content in outputs(args.out, args.chart).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
