"""kopf runs an operator against the local control plane: handlers, status patches, events, finalizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from localplane_support import WIDGETS, widget

from interp_operator.local.testing import wait_for

OPERATOR = Path(__file__).with_name("kopf_widget_operator.py")


def test_kopf_operator_reconciles_widgets(kube_endpoint, widget_crd, kube_namespace, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(kube_endpoint.kubeconfig))
    from kopf.testing import KopfRunner

    base = f"{WIDGETS}/namespaces/{kube_namespace}/widgets"
    args = ["run", "--standalone", "--namespace", kube_namespace, "--verbose", str(OPERATOR)]
    with KopfRunner(args, timeout=60) as runner:
        kube_endpoint.request("POST", base, json=widget("k", replicas=2))

        def status():
            return kube_endpoint.request("GET", f"{base}/k").json().get("status") or {}

        wait_for(lambda: status().get("replicas") == 2, timeout=20, message="kopf never set the status")
        obj = kube_endpoint.request("GET", f"{base}/k").json()
        assert "tests.interp.dev/kopf" in obj["metadata"]["finalizers"]
        kube_endpoint.request("PATCH", f"{base}/k", headers={"Content-Type": "application/merge-patch+json"},
                              data=json.dumps({"spec": {"replicas": 5}}))
        wait_for(lambda: status().get("replicas") == 5, timeout=20, message="the update handler never ran")

        def logged_event():
            events = kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/events",
                                           params={"fieldSelector": "involvedObject.name=k"}).json()["items"]
            return any("widget created" in e.get("message", "") for e in events)

        wait_for(logged_event, timeout=20, message="kopf's event never arrived")
        kube_endpoint.request("DELETE", f"{base}/k")
        wait_for(lambda: kube_endpoint.request("GET", f"{base}/k").status_code == 404, timeout=20,
                 message="kopf never released its finalizer")
    assert runner.exception is None, runner.exception
    assert "Handler 'created' succeeded" in runner.output
    assert "Handler 'deleted' succeeded" in runner.output
    assert os.environ["KUBECONFIG"] == str(kube_endpoint.kubeconfig)
