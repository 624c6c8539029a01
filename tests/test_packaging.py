"""pyproject lists every package folder (discovery cannot see renamed folders) and pins torch sensibly."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def package_folders() -> set[str]:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *relative.parts]))
    return found


def test_every_package_folder_is_listed():
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == package_folders()


def test_torch_range_admits_the_local_cpu_wheel():
    extras = PYPROJECT["project"]["optional-dependencies"]["workloads"]
    torch = next(Requirement(r) for r in extras if r.startswith("torch"))
    assert torch.specifier.contains("2.13.0")
    assert torch.specifier.contains("2.4.0") and not torch.specifier.contains("3.0.0")


def test_makefile_installs_the_pinned_torch_before_the_project():
    makefile = (REPO / "Makefile").read_text()
    assert makefile.index("TORCH_PIN") < makefile.index("-e '.[dev]'")
    assert "TORCH_PIN ?= torch==2.13.0" in makefile


def test_operator_console_script():
    assert PYPROJECT["project"]["scripts"]["interp-operator"] == "interp_operator.cli:main"
