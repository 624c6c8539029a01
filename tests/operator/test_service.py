"""The InterpInferenceService adapter through a reconcile: the revision that decides a rolling update, server pods
(probes, the auth Secret as a file, valid and restricted), and the status a service presents."""

from __future__ import annotations

import copy
import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import yaml

from interp_operator.api import kind_info
from interp_operator.gang import naming
from interp_operator.gang.placement import NodeInfo
from interp_operator.gang.pods import PodState
from interp_operator.kinds import ADAPTERS
from interp_operator.kinds.service import revision
from interp_operator.local.patch import merge_patch
from interp_operator.quantity import parse_resources
from interp_operator.reconciler import OperatorConfig, Snapshot, reconcile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pod_security import restricted_violations

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ADAPTER = ADAPTERS["InterpInferenceService"]


class Kube:
    """Keeps what a reconcile writes: the status (merge-patched, as the API server does) and the objects."""

    def __init__(self) -> None:
        self.status: dict = {}
        self.objects: dict[tuple[str, str], dict] = {}

    def patch_status(self, info, namespace, name, status):
        self.status = merge_patch(self.status, copy.deepcopy(dict(status)))

    def create(self, obj):
        key = (obj["kind"], obj["metadata"]["name"])
        new = key not in self.objects
        self.objects.setdefault(key, copy.deepcopy(dict(obj)))
        return new

    def create_all(self, objects):
        return sum(self.create(o) for o in objects)

    def replace_config_map(self, obj):
        self.objects[("ConfigMap", obj["metadata"]["name"])] = copy.deepcopy(dict(obj))

    def delete_pods(self, namespace, names):
        for name in names:
            self.objects.pop(("Pod", name), None)

    def annotate_pods(self, namespace, names, annotations):
        pass

    def delete(self, info, namespace, name):
        pass

    def pods(self, ready: bool = True) -> tuple[PodState, ...]:
        """The pods as running (and ready) ones."""
        return tuple(dataclasses.replace(PodState.from_api(o), phase="Running", ready=ready, node="node-0")
                     for k, o in self.objects.items() if k[0] == "Pod")

    def pod_names(self) -> list[str]:
        return sorted(k[1] for k in self.objects if k[0] == "Pod")


def body(generation: int = 1, **spec) -> dict:
    obj = yaml.safe_load((REPO / "examples" / "interpinferenceservice.yaml").read_text())
    obj["metadata"] |= {"uid": "uid-1", "generation": generation}
    obj["spec"] |= spec
    return obj


def run(obj: dict, kube: Kube, pods: tuple[PodState, ...]):
    snapshot = Snapshot(pods, (NodeInfo("node-0", {}, parse_resources({"cpu": 64, "nvidia.com/gpu": 8})),), {}, NOW)
    return reconcile(ADAPTER, {**obj, "status": kube.status}, snapshot, kube, OperatorConfig(default_image="img:1"))


def parse(obj: dict):
    return kind_info("InterpInferenceService").parse(obj)


def test_the_revision_follows_what_shapes_a_pod_not_replicas_or_rollout():
    base = revision(parse(body()))
    assert revision(parse(body(replicas=5))) == base
    assert revision(parse(body(rollout={"maxSurge": 1, "maxUnavailable": 0}))) == base
    assert revision(parse(body(limits={"maxNewTokens": 7}))) != base
    assert revision(parse(body(port=9000))) != base


def test_server_pods_have_probes_the_token_file_and_their_revision():
    kube = Kube()
    run(body(), kube, ())
    assert kube.pod_names() == ["pythia70m-1-0", "pythia70m-1-1"]
    pod = kube.objects[("Pod", "pythia70m-1-0")]
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    assert restricted_violations(pod) == []
    assert "affinity" not in pod["spec"], "replicas are placed by the cluster's scheduler, not pinned"
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INTERP_AUTH_TOKENS_FILE"] == "/etc/interp/secrets/auth/tokens"
    secret = next(v for v in pod["spec"]["volumes"] if "secret" in v)
    assert secret["secret"] == {"secretName": "pythia70m-tokens", "items": [{"key": "tokens", "path": "tokens"}],
                                "defaultMode": 0o440}
    mount = next(m for m in container["volumeMounts"] if m["name"] == secret["name"])
    assert mount == {"name": secret["name"], "mountPath": "/etc/interp/secrets/auth", "readOnly": True}
    assert pod["metadata"]["labels"][naming.LABEL_REVISION] == revision(parse(body()))
    assert kube.objects[("Service", "pythia70m")]["spec"].get("clusterIP") != "None"


def test_no_secret_is_mounted_when_auth_is_disabled():
    kube = Kube()
    run(body(auth={"disabled": True}), kube, ())
    pod = kube.objects[("Pod", "pythia70m-1-0")]
    assert not any("secret" in v for v in pod["spec"]["volumes"])
    assert "INTERP_AUTH_TOKENS_FILE" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_a_spec_change_rolls_the_replicas_and_the_status_says_so():
    kube = Kube()
    run(body(), kube, ())
    run(body(), kube, kube.pods())
    assert kube.status["phase"] == "Ready" and kube.status["updatedReplicas"] == 2
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AllReplicasReady")
    changed = body(generation=2, limits={"maxNewTokens": 64})
    result = run(changed, kube, kube.pods())
    assert [e.reason for e in result.events] == ["RollingUpdate"]
    assert kube.pod_names() == ["pythia70m-1-1"], "maxSurge 0, maxUnavailable 1: one old replica goes first"
    assert kube.status["phase"] == "Progressing" and kube.status["updatedReplicas"] == 0
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasUpdating")
    run(changed, kube, kube.pods())
    assert kube.pod_names() == ["pythia70m-1-1", "pythia70m-1-2"]
    assert kube.objects[("Pod", "pythia70m-1-2")]["metadata"]["labels"][naming.LABEL_REVISION] == revision(
        parse(changed))


def test_zero_replicas_is_suspended():
    kube = Kube()
    run(body(replicas=0), kube, ())
    assert kube.pod_names() == [] and kube.status["phase"] == "Suspended"
