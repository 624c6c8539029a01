"""The pydantic descriptions: validation messages, JSON round trips, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from interp_workloads.spec import (
    MAX_NORM,
    Ablation,
    AddVector,
    CaptureSpec,
    FunctionEdit,
    ModelSpec,
    Objective,
    PositionSlice,
    Projection,
    Replace,
    SAESplice,
    intervention_adapter,
    positions_adapter,
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
    ({"kind": "add", "hook": "resid_post.3", "vector": [float("nan")]}, "1 of 1 values are not finite"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [float("inf")]}, "not finite"),
    ({"kind": "add", "hook": "resid_post.3", "vector": []}, "between 1 and"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [100.0, 0.0], "scale": 1000.0}, "exceeds the cap"),
    ({"kind": "add", "hook": "resid post", "vector": [1.0]}, "should match pattern"),
    ({"kind": "add", "hook": "resid_post.3", "vector": [1.0], "positions": []}, "at least one index"),
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


def test_a_non_finite_vector_is_one_error_naming_the_field_and_the_count():
    vector = [float("nan")] * 30 + [float("inf"), 1.0]
    with pytest.raises(ValidationError) as caught:
        intervention_adapter.validate_python({"kind": "add", "hook": "embed", "vector": vector})
    errors = caught.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == ("add", "vector")
    assert "31 of 32 values are not finite" in errors[0]["msg"]
    with pytest.raises(ValidationError, match="2 of 4 values are not finite") as caught:
        intervention_adapter.validate_python({"kind": "replace", "hook": "embed",
                                              "values": [[1.0, float("nan")], [float("-inf"), 0.0]]})
    assert len(caught.value.errors()) == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"start": 1, "stop": -1}, PositionSlice(start=1, stop=-1)),
        (PositionSlice(start=2), PositionSlice(start=2)),
        (slice(1, None), PositionSlice(start=1)),
        (slice(None, 3, 1), PositionSlice(stop=3)),
        ((0, 2, -1), [0, 2, -1]),
        (range(2), [0, 1]),
        ("last", "last"),
    ],
)
def test_positions_accept_python_forms_and_store_the_json_form(given, expected):
    assert positions_adapter.validate_python(given) == expected
    edit = AddVector(hook="embed", vector=[1.0], positions=given)
    assert edit.positions == expected
    assert AddVector.model_validate_json(edit.model_dump_json()) == edit


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (slice(0, 8, 2), "step 1"),
        ({"start": 1, "step": 2}, "'start' and 'stop' only"),
        ({"start": "a"}, "'start' and 'stop' only"),
        ("first", "must be 'all', 'last', a slice"),
        (3, "got int"),
        ([0, "1"], "must be integers"),
        ([True], "must be integers"),
    ],
)
def test_bad_positions_get_one_message(given, message):
    with pytest.raises(ValidationError, match=message) as caught:
        AddVector(hook="embed", vector=[1.0], positions=given)
    assert [e["loc"] for e in caught.value.errors()] == [("positions",)]


def test_tensors_and_arrays_are_kept_and_checked_without_a_list_round_trip():
    import numpy as np
    import torch

    v = torch.arange(4, dtype=torch.float32, requires_grad=True)
    edit = AddVector(hook="embed", vector=v, scale=2.0)
    assert isinstance(edit.vector, torch.Tensor) and not edit.vector.requires_grad
    assert edit.vector.data_ptr() == v.data_ptr()
    assert json.loads(edit.model_dump_json())["vector"] == [0.0, 1.0, 2.0, 3.0]
    assert intervention_adapter.validate_json(edit.model_dump_json()).vector == [0.0, 1.0, 2.0, 3.0]
    acts = np.ones((5, 3), dtype=np.float32)
    replace = Replace(hook="embed", values=acts)
    assert replace.values is acts
    assert Replace(hook="embed", values=torch.ones(3)).values.shape == (1, 3)
    assert Ablation(hook="embed", mode="mean", mean=np.zeros(3)).mean.shape == (3,)
    for bad, message in [
        (dict(vector=torch.tensor([1.0, float("nan")])), "1 of 2 values are not finite"),
        (dict(vector=torch.ones(2, 2)), "expected a 1-D vector, got shape \\[2, 2\\]"),
        (dict(vector=torch.ones(0)), "between 1 and"),
        (dict(vector=torch.full((4,), 1e4)), "exceeds the cap"),
        (dict(vector=torch.ones(2, dtype=torch.bool)), "real numbers"),
    ]:
        with pytest.raises(ValidationError, match=message):
            AddVector(hook="embed", **bad)
    with pytest.raises(ValidationError, match="zero vector"):
        Projection(hook="embed", direction=torch.zeros(3), mode="zero")
    with pytest.raises(ValidationError, match="norm above the cap"):
        Replace(hook="embed", values=np.full((2, 2), 1e4))


def test_sae_splice_keep_error_defaults_on_and_round_trips():
    assert SAESplice(hook="embed", sae="s").keep_error is True
    lossy = intervention_adapter.validate_python({"kind": "sae", "hook": "embed", "sae": "s", "keep_error": False})
    assert lossy.keep_error is False
    assert intervention_adapter.validate_json(intervention_adapter.dump_json(lossy)) == lossy


def test_function_edit_is_in_process_only():
    edit = FunctionEdit(hook="resid_post.0", fn=lambda x: x * 2)
    with pytest.raises(Exception, match=r"holds a Python callable .* cannot be serialised"):
        edit.model_dump_json()
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        row_interventions_adapter.validate_python([edit.model_dump(exclude={"fn"})])
    with pytest.raises(ValidationError, match="callable"):
        FunctionEdit(hook="embed", fn=3)


def test_sae_config_is_exported_from_spec():
    from interp_workloads import spec

    assert spec.SAEConfig is SAEConfig
