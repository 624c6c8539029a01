"""Shared by the chart tests: the real helm binary, the value sets they render, and the rendered objects.

``make test`` passes the helm binary's path in ``HELM``; without it the tests look in .cache/tools and fail
(never skip) with the command that fetches it.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "interp-operator"
CHART_CRDS = CHART / "templates" / "crds"
NAMESPACE = "interp-system"
RELEASE = "rel"
FULLNAME = f"{RELEASE}-interp-operator"
METRICS_READER = f"{FULLNAME}-metrics-reader"
KUBE_VERSION = "1.33.0"  # the Kubernetes version helm renders for
# The custom resources the chart installs and the operator reconciles.
CRS = ("saetrainingjobs", "activationdumps", "interpinferenceservices")
SCHEDULING = {"scheduling": {"volcano": {"enabled": True}, "coscheduling": {"enabled": True}}}
DIGEST = "sha256:" + "0123456789abcdef" * 4
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# A projected token of one's own instead of the automounted one: shorter-lived, for an audience.
PROJECTED_TOKEN = {
    "serviceAccount": {"automount": False},
    "extraVolumes": [{"name": "api-token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}],
    "extraVolumeMounts": [{"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True}],
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-b", "team-a"]},
    "no-crds": {"crds": {"enabled": False}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "gang-scheduling": SCHEDULING,
    "namespaced-gang-scheduling": {"watchNamespaces": ["team-a"], **SCHEDULING},
    "customized": {
        "image": {"tag": "0.2.0-rc1"},
        "imagePullSecrets": [{"name": "regcred"}],
        "logLevel": "debug",
        "extraArgs": ["--extra-flag=1"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "podAnnotations": {"example.com/team": "interp"},
        "priorityClassName": "interp-critical",
        "serviceAccount": {"annotations": {"iam.example.com/role": "interp"}},
    },
    "single-replica": {"replicas": 1},
    "plain-metrics": {"metrics": {"secure": False, "port": 8080, "service": {"port": 8080}}},
    "metrics-cert-secret": {"metrics": {
        "certSecret": "metrics-tls", "serviceMonitor": {"enabled": True},
        "reader": {"subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"},
                                {"kind": "Group", "name": "sre"}]}}},
    "ha": {"replicas": 3},
    "namespaced-ha": {"replicas": 3, "watchNamespaces": ["team-b", "team-a"]},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "namespaced-network-policy": {"watchNamespaces": ["team-a"], "networkPolicy": {
        "enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": 3128}]}]}},
    "hardened": {
        "image": {"digest": DIGEST},
        **PROJECTED_TOKEN,
        "extraVolumes": [*PROJECTED_TOKEN["extraVolumes"],
                         {"name": "ca-bundle", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [*PROJECTED_TOKEN["extraVolumeMounts"],
                              {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
        "metrics": {"serviceMonitor": {
            "enabled": True, "namespace": "monitoring",
            "relabelings": [{"action": "replace", "targetLabel": "cluster", "replacement": "gpu-a"}],
            "tlsConfig": {"caFile": "/etc/prom-certs/root-cert.pem", "insecureSkipVerify": False}}},
    },
}


@functools.cache
def helm_binary() -> str:
    helm = os.environ.get("HELM") or str(REPO / ".cache" / "tools" / "helm")
    if not os.access(helm, os.X_OK):
        pytest.fail(f"no helm binary at {helm}: run `make helm` "
                    "(bash tests/tools/fetch-helm.sh .cache/tools) or point HELM at one")
    return helm


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False)


def values_args(values: dict[str, Any]) -> list[str]:
    # JSON is YAML: pass the values inline through --set-json per top-level key.
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


@functools.cache
def _render(values_json: str, include_crds: bool) -> tuple[dict[str, Any], ...]:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
                  *(["--include-crds"] if include_crds else []), *values_args(json.loads(values_json)))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(values: dict[str, Any], include_crds: bool = False) -> list[dict[str, Any]]:
    """The rendered templates; with ``include_crds`` also the chart's crds/ folder, as ``helm install`` applies it."""
    return copy.deepcopy(list(_render(json.dumps(values, sort_keys=True), include_crds)))


def template_error(values: dict[str, Any]) -> str:
    """The error ``helm template`` stops with for these values (the test fails if it renders)."""
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args(values))
    assert result.returncode != 0, f"rendered although it should not: {values}"
    return result.stderr


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def the(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def crd_template_files() -> list[Path]:
    return sorted(CHART_CRDS.glob("*.yaml")) if CHART_CRDS.is_dir() else []
