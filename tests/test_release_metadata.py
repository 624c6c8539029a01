"""Release metadata agrees with itself: one version, one license, and an installed package that needs no pytest."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import interp_operator

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CHART = yaml.safe_load((REPO / "charts" / "interp-operator" / "Chart.yaml").read_text())


def test_the_version_has_one_source():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "interp_operator.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", interp_operator.__version__)


def test_chart_app_version_is_the_package_version():
    assert CHART["appVersion"] == interp_operator.__version__


def test_installed_metadata_has_the_package_version():
    # An editable install records the version at install time: re-run `make install` after a bump.
    assert importlib.metadata.version("interp-operator") == interp_operator.__version__


def test_license_is_apache_2_everywhere():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert CHART["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    sections = re.findall(r"^\s+(\d+)\. [A-Z]", text, flags=re.MULTILINE)
    assert sections == [str(n) for n in range(1, 10)]


def test_project_urls_point_at_the_repository():
    urls = PYPROJECT["project"]["urls"]
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://github.com/interp-operator/interp-operator") for u in urls.values())
    assert (REPO / "CHANGELOG.md").exists() and (REPO / "CONTRIBUTING.md").exists()


BLOCKED_PYTEST = """
import importlib, pkgutil, sys
sys.modules["pytest"] = None   # any `import pytest` now raises ImportError
sys.modules["_pytest"] = None
import interp_operator
import interp_operator.demo
import interp_operator.local
# Everything installed, except the pytest plugin that exists to be loaded by pytest.
for module in pkgutil.walk_packages(interp_operator.__path__, "interp_operator."):
    if module.name != "interp_operator.local.testing":
        importlib.import_module(module.name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest") and sys.modules[m] is not None)
assert not leaked, leaked
print("ok")
"""


def test_installed_modules_import_without_pytest():
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKED_PYTEST], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_blocking_really_blocks():
    # The check above is only worth something if a module that does import pytest fails under it.
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    probe = 'import sys; sys.modules["pytest"] = None; import interp_operator.local.testing'
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=240)
    assert done.returncode != 0 and "pytest" in done.stderr


def test_make_help_lists_every_phony_target():
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.MULTILINE).group(1).split()
    listed = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True,
                            check=True, timeout=60).stdout
    shown = {line.split()[0] for line in listed.splitlines() if line.strip()}
    missing = [target for target in phony if target not in shown]
    assert not missing, f"`make help` omits {missing}: give each a `target: ## comment` line"
