"""The operator's event recorder through the kubernetes client against the API server: a repeat is one Event whose
count grows (merge patch), and kubectl-style listing shows it once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes import client, config

from interp_operator.events import Recorder
from interp_operator.gang.lifecycle import Event
from interp_operator.kube import Kube


def test_repeats_fold_into_one_event_on_the_server(kube_endpoint, kube_namespace):
    kube = Kube(config.new_client_from_config(str(kube_endpoint.kubeconfig)))
    job = {"apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob",
           "metadata": {"name": "folded", "namespace": kube_namespace, "uid": "u-folded"}}
    recorder = Recorder(kube, instance="interp-operator-0")
    start = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    for minute in range(3):
        recorder.record(job, Event("Warning", "InsufficientCapacity", "needs 4 GPUs in one rack"),
                        start + timedelta(minutes=minute))
    events = client.CoreV1Api(kube.api_client).list_namespaced_event(kube_namespace).items
    assert [(e.reason, e.count, e.reporting_component, e.reporting_instance, e.action) for e in events] == [
        ("InsufficientCapacity", 3, "interp-operator", "interp-operator-0", "Place")]
    assert (events[0].first_timestamp, events[0].last_timestamp) == (start, start + timedelta(minutes=2))
