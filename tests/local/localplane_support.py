"""Shared helpers of the local control plane tests: the Widget test CRD and watch reading."""

from __future__ import annotations

import json
from typing import Any

GROUP = "tests.interp.dev"
WIDGETS = f"/apis/{GROUP}/v1"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"],
                  "categories": ["interptest"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                     "statusReplicasPath": ".status.replicas",
                                                     "labelSelectorPath": ".status.selector"}},
            "additionalPrinterColumns": [
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["image"],
                        "x-kubernetes-validations": [
                            {"rule": "self.minReplicas <= self.replicas",
                             "message": "minReplicas must not exceed replicas"},
                            {"rule": "self.replicas >= oldSelf.replicas || self.mode != 'pinned'",
                             "message": "a pinned widget cannot scale down", "reason": "FieldValueForbidden"},
                        ],
                        "properties": {
                            "image": {"type": "string", "minLength": 1},
                            "replicas": {"type": "integer", "minimum": 0, "maximum": 100, "default": 1},
                            "minReplicas": {"type": "integer", "minimum": 0, "default": 0},
                            "mode": {"type": "string", "enum": ["fast", "slow", "pinned"], "default": "fast"},
                            "owner": {"type": "string",
                                      "x-kubernetes-validations": [{"rule": "self == oldSelf",
                                                                    "message": "owner is immutable"}]},
                            "ports": {
                                "type": "array", "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["name"],
                                "items": {"type": "object", "required": ["name", "port"], "properties": {
                                    "name": {"type": "string"},
                                    "port": {"type": "integer"},
                                    "protocol": {"type": "string", "default": "TCP"},
                                }, "x-kubernetes-validations": [{"rule": "self.port > 0 && self.port < 65536",
                                                                 "message": "port out of range"}]},
                            },
                            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                            "layers": {"type": "array", "items": {"type": "integer"}, "maxItems": 4,
                                       "x-kubernetes-validations": [
                                           {"rule": "self.all(x, x >= 0)", "message": "layers are non-negative"}]},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "replicas": {"type": "integer"},
                            "selector": {"type": "string"},
                            "observedGeneration": {"type": "integer"},
                            "conditions": {
                                "type": "array", "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["type"],
                                "items": {"type": "object", "required": ["type", "status"], "properties": {
                                    "type": {"type": "string"}, "status": {"type": "string"},
                                    "reason": {"type": "string"}, "message": {"type": "string"}}},
                            },
                        },
                    },
                },
            }},
        }],
    },
}


def established(endpoint: Any, name: str) -> bool:
    response = endpoint.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    if response.status_code != 200:
        return False
    conditions = (response.json().get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"image": "local", **spec}}


def read_events(endpoint: Any, path: str, params: dict[str, str], until: Any = None, limit: int = 50) -> list:
    """Read watch events until the stream ends, ``until`` returns True, or ``limit`` events."""
    events: list = []
    with endpoint.request("GET", path, params={"watch": "true", **params}, stream=True) as response:
        assert response.status_code == 200, response.text
        for line in response.iter_lines():
            if not line:
                continue
            events.append(json.loads(line))
            if (until and until(events)) or len(events) >= limit:
                break
    return events
