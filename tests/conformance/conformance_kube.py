"""A small HTTP client for the conformance tier: requests exactly as written, errors with the server's Status body.

Plain HTTP rather than the generated `kubernetes` client: these tests are about the wire (status codes, Status
causes, subresource paths, dry-run and fieldValidation query parameters) and must see it unmodified.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE_PATCH = "application/merge-patch+json"


def kubeconfig_client(path: Path) -> tuple[str, str, ssl.SSLContext]:
    """Server URL, bearer token and a TLS context trusting the server's CA, from the wrapper's kubeconfig."""
    config = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return cluster["server"], config["users"][0]["user"]["token"], ssl.create_default_context(cadata=ca)


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: {status} {body.get('reason', '')}: {body.get('message', body)}")

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def causes(self) -> list[dict[str, Any]]:
        return list(self.body.get("details", {}).get("causes", []))


class Kube:
    def __init__(self, kubeconfig: Path):
        self.server, self._token, self._tls = kubeconfig_client(kubeconfig)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        token: str | None = None,
        **query: str,
    ) -> dict[str, Any]:
        """One request; ``token`` replaces the admin token ("" sends none)."""
        url = self.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": accept, "Content-Type": content_type}
        token = self._token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=30) as resp:
                return dict(json.loads(resp.read() or b"{}"))
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"message": raw.decode(errors="replace")}
            raise ApiError(method, path, err.code, payload) from None

    def get(self, path: str, **query: str) -> dict[str, Any]:
        return self.request("GET", path, **query)

    def create(self, path: str, body: Any, **query: str) -> dict[str, Any]:
        return self.request("POST", path, body, **query)

    def merge_patch(self, path: str, patch: Any, **query: str) -> dict[str, Any]:
        return self.request("PATCH", path, patch, content_type=MERGE_PATCH, **query)

    def delete(self, path: str) -> dict[str, Any]:
        return self.request("DELETE", path)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    # A CRD's status is briefly empty (conditions null) after it is replaced.
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def install_crd(kube: Kube, crd: dict[str, Any], timeout_s: float = 30) -> dict[str, Any]:
    """Create a CRD (replacing one of the same name) and wait until it is Established; return the server's copy."""
    name = crd["metadata"]["name"]
    try:
        kube.create(CRD_PATH, crd)
    except ApiError as err:
        if err.status != 409:
            raise
        current = kube.get(f"{CRD_PATH}/{name}")
        replacement = dict(crd, metadata=dict(crd["metadata"], resourceVersion=current["metadata"]["resourceVersion"]))
        kube.request("PUT", f"{CRD_PATH}/{name}", replacement)
    deadline = time.monotonic() + timeout_s
    while True:
        served = kube.get(f"{CRD_PATH}/{name}")
        established = condition(served, "Established")
        if established and established["status"] == "True":
            return served
        if time.monotonic() > deadline:
            raise AssertionError(f"CRD {name} not Established after {timeout_s} s: {served.get('status')}")
        time.sleep(0.1)


def collection_path(crd: dict[str, Any], namespace: str | None = None) -> str:
    """Path of the custom resources of a CRD, at its storage version."""
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("storage"))
    base = f"/apis/{spec['group']}/{version}"
    if spec["scope"] == "Namespaced":
        base += f"/namespaces/{namespace or 'default'}"
    return f"{base}/{spec['names']['plural']}"


REPO = Path(__file__).resolve().parents[2]
WIDGET_CRD = Path(__file__).resolve().parent / "testdata" / "widgets-crd.yaml"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def example_files() -> list[Path]:
    return sorted((REPO / "examples").glob("*.yaml"))


def model_object(body: dict[str, Any]) -> dict[str, Any]:
    """What the project's models make of an object: defaults filled in, as the operator reads and writes it."""
    from interp_operator.api import kind_info

    return kind_info(body["kind"]).parse(body).to_json_dict()


def project_crd_files() -> list[Path]:
    """The generated CRDs in crds/ (whatever the generator has written so far)."""
    return sorted((REPO / "crds").glob("*.yaml"))


def unique_name(base: str) -> str:
    """A fresh object name per test, so tests sharing the session's server never collide."""
    return f"{base[:30]}-{time.monotonic_ns() % 10**9}"
