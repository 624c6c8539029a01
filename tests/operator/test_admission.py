"""Admission status: pure function from an object to its phase and Accepted condition (table-driven)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from interp_operator.admission import admission_status
from interp_operator.api import kind_info
from interp_operator.conditions import set_condition

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Obj:
    """Chainable fixture builder for a stored custom resource."""

    def __init__(self, example: str):
        self.body = yaml.safe_load((REPO / "examples" / example).read_text())
        self.body["metadata"]["generation"] = 1

    def generation(self, value: int) -> Obj:
        self.body["metadata"]["generation"] = value
        return self

    def spec(self, **changes) -> Obj:
        self.body["spec"].update(copy.deepcopy(changes))
        return self

    def status(self, **status) -> Obj:
        self.body["status"] = status
        return self

    def build(self) -> dict:
        return self.body


def accepted(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Accepted")


CASES = [
    ("valid job is pending", Obj("saetrainingjob.yaml"), "Pending", "True", "SpecValid", None),
    ("valid dump keeps its phase", Obj("activationdump.yaml").status(phase="Running"), "Running", "True", "SpecValid",
     None),
    ("k >= dictSize fails", Obj("saetrainingjob.yaml").spec(
        saes=[{"name": "a", "hookPoint": "resid_post.3", "dictSize": 8, "k": 8}]),
     "Failed", "False", "InvalidSpec", "spec.saes[0]: k must be smaller than dictSize"),
    ("missing auth fails", Obj("interpinferenceservice.yaml").spec(auth={"key": "tokens"}),
     "Failed", "False", "InvalidSpec", "spec.auth: set either secretName or disabled: true (not both)"),
    ("unknown field fails", Obj("activationdump.yaml").spec(hookpoints=["x"]),
     "Failed", "False", "InvalidSpec", "spec.hookpoints: Extra inputs are not permitted"),
    ("gpu cluster job is pending", Obj("saetrainingjob-gpu-cluster.yaml"), "Pending", "True", "SpecValid", None),
    # A hostPath volume stored under an older CRD (or with the validation bypassed) never reaches a pod.
    ("hostPath volume fails", Obj("activationdump.yaml").spec(
        worker={"volumes": [{"name": "disk", "hostPath": {"path": "/var/lib/data"}}],
                "volumeMounts": [{"name": "disk", "mountPath": "/data"}]}),
     "Failed", "False", "InvalidSpec",
     "spec.worker.volumes[0]: hostPath volumes are refused: the pods run under the restricted Pod Security Standard; "
     "reach node-local data through a PersistentVolumeClaim (a local PersistentVolume) instead"),
]


@pytest.mark.parametrize(("name", "obj", "phase", "status", "reason", "message"), CASES, ids=[c[0] for c in CASES])
def test_admission_status(name, obj, phase, status, reason, message):
    body = obj.generation(7).build()
    result = admission_status(kind_info(body["kind"]), body, NOW)
    condition = accepted(result)
    assert (result["phase"], condition["status"], condition["reason"]) == (phase, status, reason)
    assert result["observedGeneration"] == 7 and condition["observedGeneration"] == 7
    if message:
        assert condition["message"] == message


def test_transition_time_moves_only_when_status_changes():
    later = NOW + timedelta(hours=1)
    first = set_condition([], "Accepted", "True", "SpecValid", "ok", 1, NOW)
    same = set_condition(first, "Accepted", "True", "SpecValid", "ok", 2, later)
    flipped = set_condition(same, "Accepted", "False", "InvalidSpec", "bad", 3, later)
    assert same[0]["lastTransitionTime"] == "2026-11-24T12:00:00Z"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-11-24T13:00:00Z"
    assert len(flipped) == 1


def test_other_conditions_are_kept():
    body = Obj("saetrainingjob.yaml").status(
        phase="Running",
        conditions=[{"type": "Running", "status": "True", "reason": "GangReady", "message": "",
                     "lastTransitionTime": "2026-11-24T11:00:00Z"}],
    ).build()
    result = admission_status(kind_info(body["kind"]), body, NOW)
    assert [c["type"] for c in result["conditions"]] == ["Running", "Accepted"]


@pytest.mark.parametrize(("resources", "field", "said"), [
    ({"limits": {"memory": "1.5.3Gi"}}, "spec.worker.resources.limits.memory", "not a resource quantity"),
    ({"requests": {"cpu": -4}}, "spec.worker.resources", "must not be negative"),
])
def test_a_quantity_that_slipped_past_the_api_server_fails_the_object_with_the_field(resources, field, said):
    body = Obj("activationdump.yaml").body
    body["spec"]["worker"]["resources"] = resources
    status = admission_status(kind_info("ActivationDump"), body, NOW)
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert status["phase"] == "Failed" and accepted["reason"] == "InvalidSpec"
    assert f"{field}: " in accepted["message"] and said in accepted["message"], accepted["message"]
