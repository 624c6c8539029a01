"""The pydantic descriptions: validation messages, JSON round trips, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from interp_workloads.spec import (
    MAX_NORM,
    CaptureSpec,
    ModelSpec,
    Objective,
    intervention_adapter,
    row_interventions_adapter,
)
from interp_workloads.spec.sae import SAEConfig

VALID = [
    {"kind": "add", "hook": "resid_post.3", "vector": [0.1, -0.2], "scale": 4.0},
    {"kind": "add", "hook": "model.layers.6.mlp", "vector": [1.0], "positions": "last"},
    {"kind": "add", "hook": "embed", "vector": [1.0], "positions": {"start": 2, "stop": -1}},
    {"kind": "projection", "hook": "resid_mid.0", "direction": [0.0, 2.0], "mode": "set", "value": 1.5},
    {"kind": "ablate", "hook": "attn_out.1", "mode": "zero", "positions": [0, 4, -1]},
    {"kind": "ablate", "hook": "mlp_out.1", "mode": "mean", "mean": [0.5, 0.5]},
    {"kind": "replace", "hook": "final", "values": [[1.0, 2.0], [3.0, 4.0]]},
    {"kind": "sae", "hook": "resid_post.2", "sae": "res-2-16k",
     "edits": [{"feature": 12, "op": "clamp", "value": 8.0}, {"feature": 3, "op": "zero"}]},
]

INVALID = [
    ({"kind": "add", "hook": "resid_post.3", "vector": [float("nan")]}, "finite number"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [float("inf")]}, "finite number"),
    ({"kind": "add", "hook": "resid_post.3", "vector": []}, "between 1 and"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [100.0, 0.0], "scale": 1000.0}, "exceeds the cap"),
    ({"kind": "add", "hook": "resid post", "vector": [1.0]}, "should match pattern"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [1.0], "positions": []}, "at least 1 item"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [1.0], "positions": [1, 1]}, "must not repeat"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [1.0], "positions": "first"}, "positions"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [1.0], "colour": "red"}, "Extra inputs"),
    ({"kind": "projection", "hook": "resid_mid.0", "direction": [0.0, 0.0], "mode": "zero"}, "zero vector"),
    ({"kind": "projection", "hook": "resid_mid.0", "direction": [1.0], "mode": "flip"}, "'set', 'scale' or 'zero'"),
    ({"kind": "ablate", "hook": "attn_out.1", "mode": "mean"}, "needs the mean activation"),
    ({"kind": "ablate", "hook": "attn_out.1", "mode": "zero", "mean": [1.0]}, "only allowed with mode 'mean'"),
    ({"kind": "replace", "hook": "final", "values": [[1.0, 2.0], [3.0]]}, "rectangular"),
    ({"kind": "sae", "hook": "resid_post.2", "sae": "x", "edits": [{"feature": -1, "op": "zero"}]},
     "greater than or equal to 0"),
    ({"kind": "sae", "hook": "resid_post.2", "sae": "x", "edits": [{"feature": 1, "op": "clamp", "value": 1e9}]},
     "exceeds the cap"),
    ({"kind": "steer", "hook": "resid_post.2"}, "does not match any of the expected tags"),
]


@pytest.mark.parametrize("data", VALID)
def test_valid_interventions_round_trip_through_json(data):
    edit = intervention_adapter.validate_python(data)
    assert edit.kind == data["kind"]
    text = intervention_adapter.dump_json(edit)
    assert intervention_adapter.validate_json(text) == edit


@pytest.mark.parametrize(("data", "message"), INVALID)
def test_invalid_interventions_are_rejected_with_a_reason(data, message):
    with pytest.raises(ValidationError, match=message):
        intervention_adapter.validate_python(data)


def test_norm_cap_is_the_documented_constant():
    intervention_adapter.validate_python({"kind": "add", "hook": "embed", "vector": [MAX_NORM]})
    with pytest.raises(ValidationError):
        intervention_adapter.validate_python({"kind": "add", "hook": "embed", "vector": [MAX_NORM * 1.01]})


def test_rows_of_interventions_and_json_schema_for_crds():
    rows = row_interventions_adapter.validate_python(VALID[:3])
    assert [r.kind for r in rows] == ["add", "add", "add"]
    schema = row_interventions_adapter.json_schema()
    assert schema["type"] == "array"
    assert set(schema["items"]["discriminator"]["mapping"]) == {"add", "projection", "ablate", "replace", "sae"}
    json.dumps(schema)


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (ModelSpec, {"model": "org/name", "device": "tpu"}, "should match pattern"),
        (ModelSpec, {"model": "org/name", "dtype": "int8"}, "dtype"),
        (CaptureSpec, {"hooks": []}, "at least 1 item"),
        (Objective, {"kind": "logit"}, "needs the target token id"),
        (Objective, {"kind": "loss", "token": 3}, "leave 'token' and 'position' unset"),
        (SAEConfig, {"d_in": 8, "d_sae": 16, "activation": "topk"}, "needs 1 <= k <= d_sae"),
        (SAEConfig, {"d_in": 8, "d_sae": 16, "k": 4}, "only used with activation 'topk'"),
    ],
)
def test_other_specs_reject_bad_input(model, data, message):
    with pytest.raises(ValidationError, match=message):
        model.model_validate(data)


def test_model_spec_defaults_are_safe():
    spec = ModelSpec(model="org/name")
    assert spec.trust_remote_code is False
    assert (spec.dtype, spec.device) == ("float32", "cpu")


def test_specs_import_without_torch():
    code = ("import sys, interp_workloads, interp_workloads.spec, interp_workloads.spec.sae; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-P", "-c", code], check=True)
