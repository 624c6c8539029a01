"""What a client reads byte for byte: server-side table cells of every printer-column type, validation messages
(schema, list types, CEL) and the OpenAPI v3 documents kubectl explain reads. Plain HTTP only, so that the
conformance tier runs the same file against a real API server (tests/conformance/test_differential.py); the
expected values follow apiextensions-apiserver v0.36 (tableconvertor, validation, schema/cel) and apimachinery's
field.Error."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from interp_operator.local.testing import KubeEndpoint, wait_for

GROUP = "formats.interp.dev"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
CEL_SKIPPED = ("<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
               "correct the existing errors to complete validation")


def _column(name: str, type_: str, path: str, **extra: object) -> dict:
    return {"name": name, "type": type_, "jsonPath": path, **extra}


COLUMNS = [
    _column("Count", "integer", ".spec.count", description="how many"),
    _column("Ratio", "number", ".spec.ratio"),
    _column("Enabled", "boolean", ".spec.enabled"),
    _column("Code", "string", ".spec.code", priority=1),
    _column("CountText", "string", ".spec.count"),
    _column("RatioText", "string", ".spec.ratio"),
    _column("EnabledText", "string", ".spec.enabled"),
    _column("Tags", "string", ".spec.tags"),
    _column("FirstTag", "string", ".spec.tags[0]"),
    _column("LastTag", "string", ".spec.tags[-1]"),
    _column("AnyTag", "string", ".spec.tags[*]"),
    _column("Labels", "string", ".spec.labels"),
    _column("Port", "string", '.spec.ports[?(@.name=="b")].port'),
    _column("Missing", "string", ".spec.missing"),
    _column("MissingDeep", "string", ".spec.nothing.here"),
    _column("OutOfRange", "string", ".spec.tags[5]"),
    _column("Nothing", "string", ".spec.nullable"),
    _column("Started", "date", ".spec.started"),
    _column("Deadline", "date", ".spec.deadline"),
    _column("CodeAsDate", "date", ".spec.code"),
    _column("CountAsDate", "date", ".spec.count"),
    _column("CodeAsInteger", "integer", ".spec.code"),
    _column("RatioAsInteger", "integer", ".spec.ratio"),
    _column("CountAsNumber", "number", ".spec.count"),
    _column("EnabledAsInteger", "integer", ".spec.enabled"),
    _column("CountAsBoolean", "boolean", ".spec.count"),
]

SPEC_SCHEMA = {
    "type": "object",
    "description": "What a gadget is made of.",
    "x-kubernetes-validations": [
        {"rule": "!has(self.count) || self.count <= 100 || (has(self.enabled) && self.enabled)",
         "message": "big gadgets must be enabled"},
        {"rule": "!has(self.code) || self.code != 'reserved'", "fieldPath": ".code", "message": "code is reserved"},
        {"rule": "!has(self.code) || self.code != 'taken'",
         "messageExpression": "'the code ' + self.code + ' is in use'"},
        {"rule": "!has(self.owner) || self.owner != 'nobody'", "message": "an owner is needed",
         "reason": "FieldValueRequired"},
        {"rule": "!has(self.code) || self.code != 'secret'", "message": "that code is not for you",
         "reason": "FieldValueForbidden"},
    ],
    "properties": {
        "code": {"type": "string", "pattern": "^[a-z0-9]+$", "maxLength": 8, "description": "A short code."},
        "count": {"type": "integer", "maximum": 1000000, "description": "How many there are.",
                  "x-kubernetes-validations": [{"rule": "self != 13", "message": "13 is unlucky"}]},
        "ratio": {"type": "number", "minimum": 0.5, "maximum": 2000000},
        "enabled": {"type": "boolean"},
        "level": {"type": "integer", "enum": [1, 2]},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "port": {"x-kubernetes-int-or-string": True},
        "owner": {"type": "string",
                  "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "owner is immutable"}]},
        "tags": {"type": "array", "maxItems": 4, "x-kubernetes-list-type": "set", "items": {"type": "string"},
                 "x-kubernetes-validations": [{"rule": "self.all(t, t != 'bad')"}]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "initial": {"type": "string", "maxLength": 1},
        "single": {"type": "array", "maxItems": 1, "items": {"type": "string", "maxLength": 4}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "required": ["name"],
                            "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        "nullable": {"type": "string", "nullable": True},
        "settings": {"type": "object", "maxProperties": 4, "additionalProperties": {"type": "string", "maxLength": 8},
                     "x-kubernetes-validations": [{"rule": "self['mode'] == 'on'", "message": "settings need a mode"}]},
        "window": {"type": "object", "properties": {"size": {"type": "integer"}},
                   "x-kubernetes-validations": [{"rule": "self.size > 0"}]},
        "divisor": {"type": "integer", "x-kubernetes-validations": [{"rule": "100 / self > 1"}]},
        "name": {"type": "string", "minLength": 2},
        "steps": {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "multipleOf": 10},
        "weights": {"type": "array", "minItems": 2, "items": {"type": "number"}},
        "size": {"type": "string", "anyOf": [{"pattern": "^[0-9]+$"}, {"enum": ["auto"]}]},
        "shape": {"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]},
        "color": {"type": "string", "not": {"enum": ["black"]}},
        "grade": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
        "started": {"type": "string"},
        "deadline": {"type": "string"},
        "training": {"type": "object", "description": "How the gadget learns.", "required": ["steps"],
                     "properties": {"steps": {"type": "integer", "description": "Optimizer steps to run."}}},
    },
}


def gadget_crd(plural: str) -> dict:
    schema = {"openAPIV3Schema": {"type": "object", "description": "A gadget of the format tests.",
                                  "properties": {"spec": SPEC_SCHEMA}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": plural, "singular": plural[:-1], "kind": "Gadget" + plural[7:-1].title(),
                           "listKind": "Gadget" + plural[7:-1].title() + "List"},
                 "versions": [
                     {"name": "v1", "served": True, "storage": True, "schema": schema,
                      "additionalPrinterColumns": COLUMNS},
                     {"name": "v1beta1", "served": True, "storage": False, "schema": schema},
                 ]},
    }


@pytest.fixture(scope="module")
def gadgets(kube_endpoint: KubeEndpoint) -> tuple[str, str]:
    """A CRD of its own (plural, kind), deleted after the module."""
    plural = f"gadgets{uuid.uuid4().hex[:6]}s"
    crd = gadget_crd(plural)
    response = kube_endpoint.request("POST", CRDS, json=crd)
    assert response.status_code == 201, response.text

    def established() -> bool:
        got = kube_endpoint.request("GET", f"{CRDS}/{crd['metadata']['name']}").json()
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (got.get("status") or {}).get("conditions") or [])

    wait_for(established, message="the gadget CRD never became Established")
    for version in ("v1", "v1beta1"):
        wait_for(lambda v=version: kube_endpoint.request("GET", f"/apis/{GROUP}/{v}/{plural}").status_code == 200)
    yield plural, crd["spec"]["names"]["kind"]
    kube_endpoint.request("DELETE", f"{CRDS}/{crd['metadata']['name']}")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _create(endpoint: KubeEndpoint, namespace: str, plural: str, kind: str, name: str, spec: dict,
            version: str = "v1"):
    body = {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec}
    return endpoint.request("POST", f"/apis/{GROUP}/{version}/namespaces/{namespace}/{plural}", json=body)


def test_printer_columns_of_every_type(kube_endpoint, kube_namespace, gadgets):
    plural, kind = gadgets
    now = datetime.now(UTC)
    spec = {"code": "abc", "count": 7, "ratio": 1234567.5, "enabled": True, "tags": ["x", "y", "z"],
            "labels": {"b": "2", "a": "<1>"}, "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
            "nullable": None, "started": _stamp(now - timedelta(days=5, hours=3, minutes=1)),
            "deadline": _stamp(now + timedelta(days=1))}
    created = _create(kube_endpoint, kube_namespace, plural, kind, "cells", spec)
    assert created.status_code == 201, created.text
    table = kube_endpoint.request("GET", f"/apis/{GROUP}/v1/namespaces/{kube_namespace}/{plural}/cells",
                                  headers=TABLE).json()
    assert table["kind"] == "Table"
    definitions = table["columnDefinitions"]
    assert definitions[0]["name"] == "Name" and definitions[0]["type"] == "string"
    assert definitions[0]["format"] == "name" and definitions[0]["description"].startswith("Name must be unique")
    by_name = {d["name"]: d for d in definitions}
    assert by_name["Count"]["type"] == "integer" and by_name["Count"]["description"] == "how many"
    assert by_name["Started"]["type"] == "date"  # the column keeps its declared type; the cell is the age
    assert by_name["Ratio"]["description"] == "Custom resource definition column (in JSONPath format): .spec.ratio"
    assert by_name["Code"]["priority"] == 1
    cells = dict(zip([d["name"] for d in definitions], table["rows"][0]["cells"], strict=True))
    assert cells == {
        "Name": "cells", "Count": 7, "Ratio": 1234567.5, "Enabled": True, "Code": "abc",
        "CountText": "7", "RatioText": "1.2345675e+06", "EnabledText": "true",
        "Tags": '["x","y","z"]', "FirstTag": "x", "LastTag": "z", "AnyTag": "x",
        "Labels": '{"a":"\\u003c1\\u003e","b":"2"}', "Port": "2",
        "Missing": None, "MissingDeep": None, "OutOfRange": None, "Nothing": "<no value>",
        "Started": "5d3h", "Deadline": "<invalid>", "CodeAsDate": "<invalid>", "CountAsDate": None,
        "CodeAsInteger": None, "RatioAsInteger": 1234567, "CountAsNumber": 7, "EnabledAsInteger": None,
        "CountAsBoolean": None,
    }
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_a_version_without_printer_columns_gets_an_age_date_column(kube_endpoint, kube_namespace, gadgets):
    plural, kind = gadgets
    assert _create(kube_endpoint, kube_namespace, plural, kind, "plain", {}, version="v1beta1").status_code == 201
    table = kube_endpoint.request("GET", f"/apis/{GROUP}/v1beta1/namespaces/{kube_namespace}/{plural}",
                                  headers=TABLE).json()
    assert [(d["name"], d["type"]) for d in table["columnDefinitions"]] == [("Name", "string"), ("Age", "date")]
    assert table["columnDefinitions"][1]["description"].startswith("CreationTimestamp is a timestamp")
    (row,) = table["rows"]
    assert row["cells"][0] == "plain" and re.fullmatch(r"\d+s", row["cells"][1])  # seconds old: "0s", "1s", ...


def test_crds_are_listed_with_their_creation_time(kube_endpoint, gadgets):
    plural, _ = gadgets
    table = kube_endpoint.request("GET", CRDS, headers=TABLE).json()
    assert [(d["name"], d["type"], d["format"]) for d in table["columnDefinitions"]] == [
        ("Name", "string", "name"), ("Created At", "date", "")]
    crd = kube_endpoint.request("GET", f"{CRDS}/{plural}.{GROUP}").json()
    row = next(r for r in table["rows"] if r["cells"][0] == f"{plural}.{GROUP}")
    created = datetime.fromisoformat(crd["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert row["cells"][1] == _stamp(created)  # the time itself, RFC3339 in UTC, not an age


INVALID = [
    ("cel-object", {"count": 500}, "spec: Invalid value: big gadgets must be enabled"),
    ("cel-field-path", {"code": "reserved"}, "spec.code: Invalid value: code is reserved"),
    ("cel-message-expression", {"code": "taken"}, "spec: Invalid value: the code taken is in use"),
    ("cel-reason-required", {"owner": "nobody"}, "spec: Required value: an owner is needed"),
    ("cel-reason-forbidden", {"code": "secret"}, "spec: Forbidden: that code is not for you"),
    ("cel-scalar", {"count": 13}, "spec.count: Invalid value: 13: 13 is unlucky"),
    ("cel-default-message", {"tags": ["bad"]}, "spec.tags: Invalid value: failed rule: self.all(t, t != 'bad')"),
    ("cel-no-such-key", {"settings": {"other": "x"}},
     'spec.settings: Invalid value: "object": no such key: mode evaluating rule: settings need a mode'),
    ("cel-missing-field", {"window": {}},
     'spec.window: Invalid value: "object": no such key: size evaluating rule: self.size > 0'),
    ("cel-division-by-zero", {"divisor": 0},
     'spec.divisor: Invalid value: "integer": division by zero evaluating rule: 100 / self > 1'),
    ("pattern", {"code": "ABC"}, "spec.code: Invalid value: \"ABC\": spec.code in body should match '^[a-z0-9]+$'"),
    ("maximum", {"count": 2000000, "enabled": True},
     "spec.count: Invalid value: 2000000: spec.count in body should be less than or equal to 1000000"),
    ("number-maximum", {"ratio": 2500000.5},
     "spec.ratio: Invalid value: 2.5000005e+06: spec.ratio in body should be less than or equal to 2e+06"),
    ("minimum", {"ratio": 0.25}, "spec.ratio: Invalid value: 0.25: spec.ratio in body should be greater than or "
                                 "equal to 0.5"),
    ("set-duplicate", {"tags": ["x", "x"]}, 'spec.tags[1]: Duplicate value: "x"'),
    ("min-length", {"name": "a"}, 'spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long'),
    ("exclusive-minimum", {"steps": 0},
     "spec.steps: Invalid value: 0: spec.steps in body should be greater than 0"),
    ("multiple-of", {"steps": 15}, "spec.steps: Invalid value: 15: spec.steps in body should be a multiple of 10"),
    ("min-items", {"weights": [0.5]},
     "spec.weights: Invalid value: 1: spec.weights in body should have at least 2 items"),
    ("map-duplicate", {"ports": [{"name": "a"}, {"name": "a", "port": 2}]},
     'spec.ports[1]: Duplicate value: {"name":"a"}'),
]
BLOCKING = [
    ("enum-integer", {"level": 3}, 'spec.level: Unsupported value: 3: supported values: "1", "2"'),
    ("enum-string", {"mode": "warp"}, 'spec.mode: Unsupported value: "warp": supported values: "fast", "slow"'),
    ("required", {"training": {}}, "spec.training.steps: Required value"),
    ("max-length", {"code": "abcdefghij"}, "spec.code: Too long: may not be more than 8 bytes"),
    ("max-items", {"tags": ["a", "b", "c", "d", "e"]}, "spec.tags: Too many: 5: must have at most 4 items"),
    ("max-length-one", {"initial": "ab"}, "spec.initial: Too long: may not be more than 1 byte"),
    ("max-items-one", {"single": ["a", "b"]}, "spec.single: Too many: 2: must have at most 1 item"),
    ("wrong-type", {"count": "three"},
     'spec.count: Invalid value: "string": spec.count in body must be of type integer: "string"'),
    ("int-or-string", {"port": True},
     'spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"'),
]


def _rejected(endpoint, namespace, plural, kind, name, spec) -> dict:
    response = _create(endpoint, namespace, plural, kind, name, spec)
    assert response.status_code == 422, response.text
    return response.json()


@pytest.mark.parametrize(("case", "spec", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_validation_message_matches_the_real_server(kube_endpoint, kube_namespace, gadgets, case, spec, expected):
    plural, kind = gadgets
    status = _rejected(kube_endpoint, kube_namespace, plural, kind, case, spec)
    assert status["message"] == f'{kind}.{GROUP} "{case}" is invalid: {expected}'
    field, _, message = expected.partition(": ")
    assert [(c["field"], c["message"]) for c in status["details"]["causes"]] == [(field, message)]


@pytest.mark.parametrize(("case", "spec", "expected"), BLOCKING, ids=[c[0] for c in BLOCKING])
def test_errors_that_stop_the_cel_rules_say_so(kube_endpoint, kube_namespace, gadgets, case, spec, expected):
    plural, kind = gadgets
    status = _rejected(kube_endpoint, kube_namespace, plural, kind, case, {"count": 500, **spec})
    assert status["message"] == f'{kind}.{GROUP} "{case}" is invalid: [{expected}, {CEL_SKIPPED}]'
    assert status["details"]["causes"][-1] == {
        "reason": "FieldValueInvalid", "field": "<nil>",
        "message": CEL_SKIPPED.removeprefix("<nil>: ")}


COMPOSITES = [
    ("any-of", {"size": "big"}, [
        '<nil>: Invalid value: "": "spec.size" must validate at least one schema (anyOf)',
        "spec.size: Invalid value: \"big\": spec.size in body should match '^[0-9]+$'"]),
    ("one-of-two", {"shape": "ab"}, [
        '<nil>: Invalid value: "": "spec.shape" must validate one and only one schema (oneOf). Found 2 valid '
        'alternatives']),
    ("one-of-none", {"shape": "c"}, [
        '<nil>: Invalid value: "": "spec.shape" must validate one and only one schema (oneOf). Found none valid',
        "spec.shape: Invalid value: \"c\": spec.shape in body should match '^a'"]),
    ("not", {"color": "black"}, ['<nil>: Invalid value: "": "spec.color" must not validate the schema (not)']),
    ("all-of", {"grade": 9}, [
        "spec.grade: Invalid value: 9: spec.grade in body should be less than or equal to 5",
        '<nil>: Invalid value: "": "spec.grade" must validate all the schemas (allOf)']),
]


@pytest.mark.parametrize(("case", "spec", "expected"), COMPOSITES, ids=[c[0] for c in COMPOSITES])
def test_composite_schemas_report_as_kube_openapi_does(kube_endpoint, kube_namespace, gadgets, case, spec, expected):
    plural, kind = gadgets
    status = _rejected(kube_endpoint, kube_namespace, plural, kind, case, spec)
    listed = expected[0] if len(expected) == 1 else "[" + ", ".join(expected) + "]"
    assert status["message"] == f'{kind}.{GROUP} "{case}" is invalid: {listed}'


def test_a_null_in_a_non_nullable_field_without_default_is_dropped(kube_endpoint, kube_namespace, gadgets):
    plural, kind = gadgets
    created = _create(kube_endpoint, kube_namespace, plural, kind, "nulls", {"name": None, "nullable": None})
    assert created.status_code == 201, created.text
    assert created.json()["spec"] == {"nullable": None}


def test_transition_rule_on_a_string_shows_the_value(kube_endpoint, kube_namespace, gadgets):
    plural, kind = gadgets
    assert _create(kube_endpoint, kube_namespace, plural, kind, "owned", {"owner": "alice"}).status_code == 201
    path = f"/apis/{GROUP}/v1/namespaces/{kube_namespace}/{plural}/owned"
    response = kube_endpoint.request("PATCH", path, headers={"Content-Type": "application/merge-patch+json"},
                                     data=json.dumps({"spec": {"owner": "bob"}}))
    assert response.status_code == 422
    assert response.json()["message"] == f'{kind}.{GROUP} "owned" is invalid: spec.owner: Invalid value: "bob": ' \
                                          "owner is immutable"


def test_openapi_v3_publishes_the_crd_schema_for_kubectl_explain(kube_endpoint, gadgets):
    _, kind = gadgets
    index = kube_endpoint.request("GET", "/openapi/v3").json()["paths"]
    url = index[f"apis/{GROUP}/v1"]["serverRelativeURL"]
    assert url.startswith(f"/openapi/v3/apis/{GROUP}/v1?hash=")
    document = {}
    for _ in range(20):  # the real server publishes a new CRD's schema a moment after it is established
        document = kube_endpoint.request("GET", index[f"apis/{GROUP}/v1"]["serverRelativeURL"]).json()
        if f"dev.interp.formats.v1.{kind}" in document.get("components", {}).get("schemas", {}):
            break
        time.sleep(0.5)
        index = kube_endpoint.request("GET", "/openapi/v3").json()["paths"]
    schemas = document["components"]["schemas"]
    main = schemas[f"dev.interp.formats.v1.{kind}"]
    assert main["x-kubernetes-group-version-kind"] == [{"group": GROUP, "kind": kind, "version": "v1"}]
    assert main["description"] == "A gadget of the format tests."
    training = main["properties"]["spec"]["properties"]["training"]
    assert training["description"] == "How the gadget learns." and training["required"] == ["steps"]
    assert training["properties"]["steps"] == {"type": "integer", "description": "Optimizer steps to run."}
    assert main["properties"]["metadata"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
        "description": "Standard object's metadata. More info: "
                       "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}
    port = main["properties"]["spec"]["properties"]["port"]  # int-or-string unfolded as the structural schema does
    assert port == {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert main["properties"]["apiVersion"]["type"] == "string" and main["properties"]["kind"]["type"] == "string"
    meta = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
    assert meta["properties"]["name"]["type"] == "string"
    listing = schemas[f"dev.interp.formats.v1.{kind}List"]
    assert listing["x-kubernetes-group-version-kind"] == [{"group": GROUP, "kind": f"{kind}List", "version": "v1"}]
    assert listing["properties"]["items"]["items"] == {"$ref": f"#/components/schemas/dev.interp.formats.v1.{kind}"}
