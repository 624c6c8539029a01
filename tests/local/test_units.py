"""Table-driven checks of the pure pieces: patches, selectors, quantities, schema defaulting, CEL."""

from __future__ import annotations

import pytest

from interp_operator.local import cel, schema
from interp_operator.local.errors import ApiError
from interp_operator.local.kubelet.env import PathMap
from interp_operator.local.patch import json_patch, merge_patch, strategic_merge_patch
from interp_operator.local.selectors import make_filter, parse_label_selector

DOC = {"a": {"b": 1, "c": [1, 2]}, "list": ["x"]}


@pytest.mark.parametrize(("ops", "expected"), [
    ([{"op": "add", "path": "/a/d", "value": 3}], {"a": {"b": 1, "c": [1, 2], "d": 3}, "list": ["x"]}),
    ([{"op": "remove", "path": "/a/c/0"}], {"a": {"b": 1, "c": [2]}, "list": ["x"]}),
    ([{"op": "replace", "path": "/list/0", "value": "y"}], {"a": {"b": 1, "c": [1, 2]}, "list": ["y"]}),
    ([{"op": "move", "from": "/a/b", "path": "/b"}], {"a": {"c": [1, 2]}, "list": ["x"], "b": 1}),
    ([{"op": "copy", "from": "/a/c", "path": "/list/-"}], {"a": {"b": 1, "c": [1, 2]}, "list": ["x", [1, 2]]}),
    ([{"op": "add", "path": "/list/0", "value": "w"}], {"a": {"b": 1, "c": [1, 2]}, "list": ["w", "x"]}),
])
def test_json_patch(ops, expected):
    assert json_patch(DOC, ops) == expected
    assert DOC == {"a": {"b": 1, "c": [1, 2]}, "list": ["x"]}  # the input is not modified


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/a/b", "value": 2}],
    [{"op": "remove", "path": "/nope"}],
    [{"op": "replace", "path": "/a/zz", "value": 1}],
])
def test_json_patch_failures_are_422(ops):
    with pytest.raises(ApiError) as failure:
        json_patch(DOC, ops)
    assert failure.value.code == 422


def test_merge_patch_rfc7386():
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == \
        {"a": {"c": 2, "e": 3}, "d": [2]}


@pytest.mark.parametrize(("patch", "expected_names", "expected_env"), [
    ({"containers": [{"name": "b", "image": "new"}]}, ["a", "b"], None),
    ({"containers": [{"name": "c", "image": "c"}]}, ["a", "b", "c"], None),
    ({"containers": [{"name": "a", "$patch": "delete"}]}, ["b"], None),
    ({"containers": [{"name": "a", "env": [{"name": "X", "value": "2"}]}]}, ["a", "b"],
     [{"name": "X", "value": "2"}, {"name": "Y", "value": "1"}]),
])
def test_strategic_merge_by_keys(patch, expected_names, expected_env):
    env = [{"name": "X", "value": "1"}, {"name": "Y", "value": "1"}]
    pod = {"containers": [{"name": "a", "image": "a", "env": env}, {"name": "b", "image": "b"}]}
    result = strategic_merge_patch(pod, patch)
    assert [c["name"] for c in result["containers"]] == expected_names
    if expected_env is not None:
        assert sorted(result["containers"][0]["env"], key=lambda e: e["name"]) == expected_env


def test_strategic_merge_finalizers_and_primitive_deletes():
    merged = strategic_merge_patch({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["b"]}})
    assert merged["metadata"]["finalizers"] == ["a", "b"]
    removed = strategic_merge_patch(merged, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert removed["metadata"]["finalizers"] == ["b"]


LABELS = {"metadata": {"labels": {"app": "x", "tier": "db", "n": "3"}}}


@pytest.mark.parametrize(("selector", "matches"), [
    ("app=x", True), ("app==x", True), ("app!=x", False), ("app in (x, y)", True), ("tier notin (db)", False),
    ("missing", False), ("!missing", True), ("app,tier=db", True), ("app=x,tier in (web)", False), ("", True),
])
def test_label_selectors(selector, matches):
    assert make_filter(None, selector, None, (), "Pod")(LABELS) is matches


def test_bad_label_selector_is_400():
    with pytest.raises(ApiError) as failure:
        parse_label_selector("app===x")
    assert failure.value.code == 400


SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "n": {"type": "integer", "default": 2}, "inner": {"type": "object", "default": {},
                                                      "properties": {"x": {"type": "string", "default": "d"}}}}}}}


def test_defaulting_fills_nested_defaults_and_null():
    assert schema.apply_defaults({"spec": {"n": None}}, SCHEMA) == {"spec": {"n": 2, "inner": {"x": "d"}}}


def test_cel_transition_rule_skipped_on_create_and_enforced_on_update():
    rules = {"type": "object", "properties": {"v": {"type": "integer"}},
             "x-kubernetes-validations": [{"rule": "self.v >= oldSelf.v", "message": "no decrease"}]}
    assert cel.evaluate({"v": 1}, rules) == []
    assert cel.evaluate({"v": 3}, rules, {"v": 2}) == []
    errors = cel.evaluate({"v": 1}, rules, {"v": 2})
    assert len(errors) == 1 and "no decrease" in errors[0]["message"]


PATHS = PathMap({"/data": "/state/vol/d", "/data/models": "/state/vol/m"},
                files={"/dev/termination-log": "/state/pod/termination/main/0"})


@pytest.mark.parametrize(("text", "rewritten"), [
    ("/data/x", "/state/vol/d/x"),
    ("--out=/data/x,/data/models/y", "--out=/state/vol/d/x,/state/vol/m/y"),
    ("/data", "/state/vol/d"),
    ("/database/x", "/database/x"),
    ("/data.txt", "/data.txt"),
    ("/mydata/x", "/mydata/x"),
    ("/dev/termination-log", "/state/pod/termination/main/0"),
    ("--message=/dev/termination-log", "--message=/state/pod/termination/main/0"),
    ("/dev/termination-log2", "/dev/termination-log2"),
    ("/dev/null", "/dev/null"),
])
def test_path_map_rewrites_whole_paths_only(text, rewritten):
    assert PATHS.rewrite(text) == rewritten


def test_path_map_local_paths():
    assert PATHS.local("/dev/termination-log") == "/state/pod/termination/main/0"
    assert PATHS.local("/data/models/a") == "/state/vol/m/a"
    assert PATHS.local("/elsewhere") == "/elsewhere"
