"""docs/api-reference.md is what the models give, and it documents every field of every model."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from interp_operator import apiref
from interp_operator.api.registry import KINDS

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api-reference.md"


def test_the_committed_reference_is_what_the_models_give():
    assert REFERENCE.read_text() == apiref.render(), (
        "docs/api-reference.md drifted from the models: run python -m interp_operator.apiref "
        "--out docs/api-reference.md")
    assert apiref.main(["--check", str(REFERENCE)]) == 0


def test_check_fails_on_a_drifted_file(tmp_path, capsys):
    stale = tmp_path / "api-reference.md"
    stale.write_text(apiref.render().replace("Tokens per context", "Tokens per contxt"))
    assert apiref.main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _fields(model: type[BaseModel], path: str, out: dict[str, set[str]]) -> None:
    """Every object path and its fields' wire names, walked from the pydantic models themselves."""
    names = out.setdefault(path, set())
    for name, field in model.model_fields.items():
        wire = field.alias or name
        names.add(wire)
        origin = typing.get_origin(field.annotation)
        suffix = "[]" if origin is list else "{}" if origin is dict else ""
        for child in _models(field.annotation):
            _fields(child, f"{path}.{wire}{suffix}", out)


def test_every_field_of_every_model_has_a_row_under_its_object():
    text = REFERENCE.read_text()
    for info in KINDS:
        kind_text = text.split(f"## {info.kind}\n", 1)[1].split("\n## ", 1)[0]
        kind_sections = dict(re.findall(r"#### `([^`]+)`\n(.*?)(?=\n#### |\Z)", kind_text, re.S))
        for section in ("spec", "status"):
            model = next(m for m in _models(info.model.model_fields[section].annotation))
            expected: dict[str, set[str]] = {}
            _fields(model, section, expected)
            for path, names in expected.items():
                if not names:
                    continue
                assert path in kind_sections, f"{info.kind}: no table for {path}"
                rows = set(re.findall(r"^\| `([^`]+)` \|", kind_sections[path], re.M))
                assert names <= rows, f"{info.kind} {path}: missing {sorted(names - rows)}"
