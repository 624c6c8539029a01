"""The operator (kopf's KopfRunner, in this process) against the real API server for everything that needs no pods:
admission, status writes through the status subresource, suspend, deletion, and a spec the operator must refuse.

Custom resources live on the real server; core/v1 (events, and the pod and node watches kopf waits for) comes from
interp-local through split_api. The gangs below never get pods: they are suspended, or ask for nodes that do not exist.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conformance_kube import ApiError, Kube, install_crd, load_yaml
from split_api import split_api

from interp_operator.local.testing import wait_for

REPO = Path(__file__).resolve().parents[2]
JOBS = "/apis/interp.dev/v1alpha1/namespaces/{ns}/saetrainingjobs"
CRD = REPO / "crds" / "interp.dev_saetrainingjobs.yaml"

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def cluster(real_apiserver: Path, kube_endpoint: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Kube, Path]]:
    kube = Kube(real_apiserver)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        install_crd(kube, load_yaml(path))
    with split_api(real_apiserver, kube_endpoint.kubeconfig, tmp_path_factory.mktemp("split") / "kubeconfig") as kc:
        yield kube, kc


@pytest.fixture(scope="module")
def operator(cluster: Any) -> Iterator[Any]:
    from kopf.testing import KopfRunner

    _, kubeconfig = cluster
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(kubeconfig))
        # kopf logs in through the client library, whose default kubeconfig path was fixed when it was imported.
        patch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        with KopfRunner(["run", "-A", "--standalone", "-m", "interp_operator.handlers"], timeout=120) as runner:
            yield runner
    assert runner.exception is None, runner.exception
    assert "Traceback" not in runner.output, runner.output[-4000:]


@pytest.fixture
def ns(kube_endpoint: Any) -> str:
    """A namespace on both servers (the real one stores custom resources in any namespace; events need it locally)."""
    name = f"op-{uuid.uuid4().hex[:8]}"
    response = kube_endpoint.request("POST", "/api/v1/namespaces",
                                     json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    response.raise_for_status()
    return name


def job(name: str, **spec: Any) -> dict[str, Any]:
    body = load_yaml(REPO / "examples" / "saetrainingjob.yaml")
    body["metadata"] = {"name": name}
    body["spec"]["gang"]["nodeSelector"] = {"interp.dev/test-pool": "nowhere"}  # never placed: no pods
    # A store of its own: a job reading an ActivationDump waits for it before any placement.
    body["spec"]["data"] = {"store": {"claimName": "interp-data", "subPath": "stores/pythia70m-resid"}}
    body["spec"] |= spec
    return body


def get(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get(f"{JOBS.format(ns=ns)}/{name}")


def status_where(kube: Kube, ns: str, name: str, check: Any, what: str, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = get(kube, ns, name)
        return obj if check(obj.get("status") or {}) else None

    try:
        return wait_for(reached, timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"{name}: {what}; status is {get(kube, ns, name).get('status')}") from None


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_admitted_job_gets_its_status_through_the_status_subresource(cluster, operator, ns):
    kube, _ = cluster
    kube.create(JOBS.format(ns=ns), job("admitted"))
    obj = status_where(kube, ns, "admitted", lambda s: condition(s, "PodsPlaced").get("status") == "False",
                       "never reported that the gang cannot be placed")
    status = obj["status"]
    assert condition(status, "Accepted") | {"lastTransitionTime": None} == {
        "type": "Accepted", "status": "True", "reason": "SpecValid", "message": "the spec is valid",
        "observedGeneration": 1, "lastTransitionTime": None}
    assert status["phase"] == "Pending" and status["observedGeneration"] == 1
    assert "nodeSelector" in condition(status, "PodsPlaced")["message"]
    assert obj["metadata"]["generation"] == 1, "status writes went through the status subresource"
    kube.merge_patch(f"{JOBS.format(ns=ns)}/admitted", {"spec": {"training": {"tokens": 20_000_000}}})
    status_where(kube, ns, "admitted", lambda s: s.get("observedGeneration") == 2,
                 "never observed the new generation")


def test_suspended_job_is_suspended_and_resumes(cluster, operator, ns):
    kube, _ = cluster
    kube.create(JOBS.format(ns=ns), job("paused", runPolicy={"suspend": True}))
    obj = status_where(kube, ns, "paused", lambda s: s.get("phase") == "Suspended", "never suspended")
    assert condition(obj["status"], "Suspended")["status"] == "True"
    kube.merge_patch(f"{JOBS.format(ns=ns)}/paused", {"spec": {"runPolicy": {"suspend": False}}})
    obj = status_where(kube, ns, "paused", lambda s: s.get("phase") == "Pending", "never resumed")
    assert condition(obj["status"], "Suspended") | {"lastTransitionTime": None} == {
        "type": "Suspended", "status": "False", "reason": "Resumed", "message": "runPolicy.suspend was cleared",
        "observedGeneration": 2, "lastTransitionTime": None}


def test_deleting_a_job_is_not_held_by_the_operator(cluster, operator, ns):
    kube, _ = cluster
    kube.create(JOBS.format(ns=ns), job("doomed"))
    status_where(kube, ns, "doomed", lambda s: s.get("phase") == "Pending", "never reconciled")
    kube.delete(f"{JOBS.format(ns=ns)}/doomed")

    def gone() -> bool:
        try:
            get(kube, ns, "doomed")
        except ApiError as err:
            return err.status == 404
        return False

    wait_for(gone, timeout=30, interval=0.2, message="the job was never deleted (a finalizer left behind?)")


def test_spec_the_operator_refuses_fails_with_a_condition_and_no_crash_loop(cluster, operator, ns):
    """An object stored before a stricter CRD (here: the CEL rules removed, then restored) is refused by the operator's
    own validation: Failed with the rule's message, written once, while other objects are still reconciled."""
    kube, _ = cluster
    strict = load_yaml(CRD)
    lax = copy.deepcopy(strict)
    item = lax["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["saes"]["items"]
    item.pop("x-kubernetes-validations")
    install_crd(kube, lax)
    bad = job("too-dense")
    bad["spec"]["saes"][0]["k"] = bad["spec"]["saes"][0]["dictSize"]

    def stored() -> bool:
        try:
            kube.create(JOBS.format(ns=ns), bad)
        except ApiError as err:  # the server may validate with the old schema for a moment after the update
            assert "k must be smaller than dictSize" in err.message, err
            return False
        return True

    try:
        wait_for(stored, timeout=30, interval=0.2, message="the relaxed CRD never took effect")
    finally:
        install_crd(kube, strict)
    obj = status_where(kube, ns, "too-dense", lambda s: s.get("phase") == "Failed", "never failed")
    accepted = condition(obj["status"], "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec")
    assert "k must be smaller than dictSize" in accepted["message"]
    obj = get(kube, ns, "too-dense")
    # No finalizer: an object must stay deletable after the operator is uninstalled.
    assert not obj["metadata"].get("finalizers")
    version = obj["metadata"]["resourceVersion"]
    kube.create(JOBS.format(ns=ns), job("still-served"))
    status_where(kube, ns, "still-served", lambda s: s.get("phase") == "Pending", "the operator stopped working")
    time.sleep(2)
    assert get(kube, ns, "too-dense")["metadata"]["resourceVersion"] == version, "the refused object is rewritten"
