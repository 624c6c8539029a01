"""The conformance tier: a real Kubernetes CRD API server (apiextensions-apiserver + etcd) built from Debian packages.

``real_apiserver`` builds the server with build-apiserver.sh (or reuses its cache), starts etcd and the server on
127.0.0.1 with throw-away data directories and yields the path of an admin kubeconfig. A failed *build* (Debian
registry or package drift) skips the tier with a banner nobody can miss (``INTERP_CONFORMANCE_REQUIRED=1`` turns it
into an error); a server that built but does not start is a test error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conformance_kube import WIDGET_CRD, ApiError, Kube, install_crd, load_yaml, project_crd_files
from conformance_server import FAILURE_LOG, BuildFailed, build_apiserver, running_apiserver

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The example/CRD/catalogue loaders are shared with tests/api (prepend import mode only adds it when collected).
sys.path.insert(0, str(REPO / "tests" / "api"))

SKIP_MARK = "CONFORMANCE TIER SKIPPED"
BUILD_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.conformance)
            # The first test's setup may include a cold build (minutes); the suite-wide timeout is for tests.
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def real_apiserver(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Path of an admin kubeconfig for a running real CRD API server (one per session, i.e. per xdist worker)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        # Uncaptured, so a cold build (minutes) shows its progress on the terminal as it goes.
        with capture.global_and_fixture_disabled():
            bin_dir = build_apiserver()
    except BuildFailed as err:
        message = f"{SKIP_MARK}: the real API server could not be built from Debian packages: {err}"
        if os.environ.get("INTERP_CONFORMANCE_REQUIRED") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # A server that built but does not start raises here: a test error, not a skip.
    with running_apiserver(bin_dir) as kubeconfig:
        yield kubeconfig


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Also runs on the xdist controller, which sees the workers' skip reports but not their module state.
    reasons = {
        str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for report in terminalreporter.stats.get("skipped", [])
    }
    reasons = {r.removeprefix("Skipped: ") for r in reasons if SKIP_MARK in r}
    if not reasons:
        return
    bar = "!" * 100
    terminalreporter.write_line(bar, red=True, bold=True)
    terminalreporter.write_line(f"!!! {SKIP_MARK}: the real Kubernetes API server did not build.", red=True, bold=True)
    terminalreporter.write_line("!!! Nothing was checked against a real server.", red=True, bold=True)
    for reason in sorted(reasons):
        terminalreporter.write_line(f"!!! {reason}", red=True)
    if FAILURE_LOG.exists():
        terminalreporter.write_line(f"!!! Build log tail ({FAILURE_LOG}):", red=True, bold=True)
        for line in FAILURE_LOG.read_text().splitlines():
            terminalreporter.write_line(f"!!!   {line}", red=True)
    terminalreporter.write_line(bar, red=True, bold=True)


@pytest.fixture(scope="session")
def kube(real_apiserver: Path) -> Kube:
    return Kube(real_apiserver)


class InstalledCrds(dict):
    """The server's copies of the installed CRDs by kind; a kind whose CRD the server rejected fails its tests."""

    def __init__(self, served: dict[str, dict[str, Any]], rejected: dict[str, Exception]):
        super().__init__(served)
        self.rejected = rejected

    def __missing__(self, kind: str) -> dict[str, Any]:
        if kind in self.rejected:
            pytest.fail(f"the real API server rejected the CRD of {kind} (see test_crds.py): {self.rejected[kind]}",
                        pytrace=False)
        raise KeyError(kind)


@pytest.fixture(scope="session")
def installed_crds(kube: Kube) -> InstalledCrds:
    """Every CRD of crds/ plus the tier's own Widget CRD, installed and Established."""
    served: dict[str, dict[str, Any]] = {}
    rejected: dict[str, Exception] = {}
    for path in [*project_crd_files(), WIDGET_CRD]:
        crd = load_yaml(path)
        try:
            served[crd["spec"]["names"]["kind"]] = install_crd(kube, crd)
        except ApiError as err:
            rejected[crd["spec"]["names"]["kind"]] = err
    return InstalledCrds(served, rejected)
