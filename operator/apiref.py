"""docs/api-reference.md from the API models, through the same structural schema the CRDs are generated from.

    python -m interp_operator.apiref --out docs/api-reference.md     # write it
    python -m interp_operator.apiref --check docs/api-reference.md   # exit 1 when the file drifted from the models

Each kind gets one table per object (spec, then every nested object, in field order, then status): field, type,
default, constraints (bounds, patterns, enums, the CEL rules of the object) and the description from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .api.registry import API_VERSION, KINDS, KindInfo
from .crdgen import open_api_schema

HEADER = """# API reference

Generated from the API models by `python -m interp_operator.apiref --out docs/api-reference.md` (a test fails when
this file and the models differ). The narrative, the defaults' reasons and the catalogue of errors are in
[api.md](api.md); complete examples in [../examples/](../examples/).
"""
_BOUNDS = (("minimum", "≥ {}"), ("maximum", "≤ {}"), ("exclusiveMinimum", "> {}"), ("exclusiveMaximum", "< {}"),
           ("minLength", "length ≥ {}"), ("maxLength", "length ≤ {}"), ("minItems", "items ≥ {}"),
           ("maxItems", "items ≤ {}"))


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{_type(node.get('items') or {})}"
    if kind == "object" and "additionalProperties" in node and "properties" not in node:
        return f"map[string]{_type(node['additionalProperties'] or {})}"
    return str(kind)


def _text(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text inside a table cell, where a bare | would end the cell."""
    return _text(text).replace("|", "\\|")


def _constraints(node: dict[str, Any]) -> list[str]:
    out = [template.format(node[key]) for key, template in _BOUNDS if key in node]
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    if node.get("format"):
        out.append(f"format {node['format']}")
    return out


def _objects(path: str, node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object schema) of ``node`` and of every object below it, depth first in field order."""
    if node.get("type") == "array":
        yield from _objects(f"{path}[]", node.get("items") or {})
        return
    if node.get("type") == "object" and "additionalProperties" in node and "properties" not in node:
        yield from _objects(f"{path}{{}}", node["additionalProperties"] or {})
        return
    if "properties" not in node:
        return
    yield path, node
    for name, child in node["properties"].items():
        yield from _objects(f"{path}.{name}", child)


def _table(path: str, node: dict[str, Any]) -> str:
    required = set(node.get("required") or ())
    lines = [f"#### `{path}`", ""]
    if node.get("description"):
        lines += [_text(node["description"]), ""]
    for rule in node.get("x-kubernetes-validations") or ():
        lines.append(f"- rule: {_text(rule['message'])} (`{_text(rule['rule'])}`)")
    if node.get("x-kubernetes-validations"):
        lines.append("")
    lines += ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    for name, child in node["properties"].items():
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ("required" if name in required
                                                                                    else "")
        description = _cell(child.get("description", ""))
        rules = "; ".join(_text(r["message"]) for r in child.get("x-kubernetes-validations") or ()
                          if child.get("type") != "object" or "properties" not in child)
        constraints = _cell("; ".join([*_constraints(child), *([rules] if rules else [])]))
        lines.append(f"| `{name}` | {_type(child)} | {default} | {constraints} | {description} |")
    return "\n".join(lines) + "\n"


def render_kind(info: KindInfo) -> str:
    schema = open_api_schema(info)
    parts = [f"## {info.kind}", "",
             _text(schema.get("description", "")), "",
             f"`apiVersion: {API_VERSION}`, `kind: {info.kind}`; plural `{info.plural}`, short names "
             f"{', '.join(f'`{n}`' for n in info.short_names)}; namespaced; category `interp`.", ""]
    for rule in schema.get("x-kubernetes-validations") or ():
        parts += [f"- rule: {_text(rule['message'])} (`{_text(rule['rule'])}`)", ""]
    for section in ("spec", "status"):
        parts += [f"### {section}", ""]
        parts += [_table(path, node) for path, node in _objects(section, schema["properties"][section])]
    return "\n".join(parts)


def render() -> str:
    kinds = sorted(KINDS, key=lambda info: info.kind)
    toc = "\n".join(f"- [{info.kind}](#{info.kind.lower()})" for info in kinds)
    return HEADER + "\n" + toc + "\n\n" + "\n".join(render_kind(info) for info in kinds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_operator.apiref", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the reference here")
    group.add_argument("--check", type=Path, help="exit 1 if this file differs from what the models give")
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        args.out.write_text(text)
        return 0
    if not args.check.exists() or args.check.read_text() != text:
        print(f"{args.check} is out of date: run python -m interp_operator.apiref --out {args.check}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
