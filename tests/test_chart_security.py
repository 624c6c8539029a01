"""The chart's security: least-privilege RBAC without wildcards, and pods that pass the restricted PSS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helm_chart import CRS, FULLNAME, METRICS_READER, NAMESPACE, SCENARIOS, of_kind, render, template_error, the
from pod_security import PodTemplate, pod_templates, restricted_violations

# ------------------------------------------------------------------------------------------------ RBAC

Grants = dict[tuple[str, str], set[str]]  # (API group, resource) -> verbs
CORE_WRITE = {"get", "list", "watch", "create", "delete", "patch"}
READ = {"get", "list", "watch"}
NAMESPACED_GRANTS: Grants = {
    **{("interp.dev", cr): {"get", "list", "watch", "patch", "update", "delete"} for cr in CRS},
    **{("interp.dev", f"{cr}/status"): {"get", "patch", "update"} for cr in CRS},
    **{("interp.dev", f"{cr}/finalizers"): {"update"} for cr in CRS},
    ("", "pods"): CORE_WRITE,
    ("", "services"): CORE_WRITE,
    ("", "configmaps"): CORE_WRITE | {"update"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
CLUSTER_GRANTS: Grants = {
    ("", "nodes"): READ,
    ("", "namespaces"): READ,
    ("apiextensions.k8s.io", "customresourcedefinitions"): READ,
}
# kopf watches its peering object and patches its own entry into it; the chart creates the object.
PEERING_VERBS = {"list", "watch", "patch"}
CLUSTER_PEERING_GRANTS: Grants = {("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS}
NAMESPACED_PEERING_GRANTS: Grants = {("kopf.dev", "kopfpeerings"): PEERING_VERBS}
GANG_GRANTS = {(group, "podgroups"): CORE_WRITE for group in ("scheduling.volcano.sh", "scheduling.x-k8s.io")}
# The secure metrics endpoint reviews each scrape's token and its right to get /metrics.
METRICS_REVIEW_GRANTS: Grants = {("authentication.k8s.io", "tokenreviews"): {"create"},
                                 ("authorization.k8s.io", "subjectaccessreviews"): {"create"}}
NON_RESOURCE = "nonResourceURL"  # the "group" grants() files non-resource URLs under


def grants(role: dict[str, Any]) -> Grants:
    granted: Grants = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames"), rule
        if "nonResourceURLs" in rule:
            assert "apiGroups" not in rule and "resources" not in rule, rule
            for url in rule["nonResourceURLs"]:
                granted.setdefault((NON_RESOURCE, url), set()).update(rule["verbs"])
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def operator_roles(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Roles bound to the operator's ServiceAccount (the aggregated user roles are bound to nobody, the metrics
    reader role to the scrapers of metrics.reader.subjects)."""
    account = the(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in {"ClusterRole", "Role"}}
    for binding in objects:
        if binding["kind"] not in {"ClusterRoleBinding", "RoleBinding"} or binding["roleRef"]["name"] == METRICS_READER:
            continue
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
        ref = binding["roleRef"]
        namespace = binding["metadata"]["namespace"] if ref["kind"] == "Role" else None
        yield roles[(ref["kind"], namespace, ref["name"])]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_wildcard_in_any_rbac_rule(scenario: str) -> None:
    roles = [o for o in render(SCENARIOS[scenario]) if o["kind"] in {"ClusterRole", "Role"}]
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in entry for entry in rule.get(field, [])), (role["metadata"], rule)


# scenario -> (operator grants cluster-wide, operator grants per watched namespace)
SECURE_CLUSTER = CLUSTER_GRANTS | METRICS_REVIEW_GRANTS  # cluster-scoped reviews, in either watch mode
EXPECTED_GRANTS: dict[str, tuple[Grants, dict[str, Grants]]] = {
    "default": (SECURE_CLUSTER | NAMESPACED_GRANTS | CLUSTER_PEERING_GRANTS, {}),
    "single-replica": (SECURE_CLUSTER | NAMESPACED_GRANTS, {}),
    "plain-metrics": (CLUSTER_GRANTS | NAMESPACED_GRANTS | CLUSTER_PEERING_GRANTS, {}),
    "metrics-cert-secret": (SECURE_CLUSTER | NAMESPACED_GRANTS | CLUSTER_PEERING_GRANTS, {}),
    "gang-scheduling": (SECURE_CLUSTER | NAMESPACED_GRANTS | CLUSTER_PEERING_GRANTS | GANG_GRANTS, {}),
    "namespaced": (SECURE_CLUSTER, {namespace: NAMESPACED_GRANTS | NAMESPACED_PEERING_GRANTS
                                    for namespace in ("team-a", "team-b")}),
    "namespaced-gang-scheduling": (SECURE_CLUSTER, {"team-a": NAMESPACED_GRANTS | NAMESPACED_PEERING_GRANTS
                                                    | GANG_GRANTS}),
    "ha": (SECURE_CLUSTER | NAMESPACED_GRANTS | CLUSTER_PEERING_GRANTS, {}),
    "namespaced-ha": (SECURE_CLUSTER, {namespace: NAMESPACED_GRANTS | NAMESPACED_PEERING_GRANTS
                                       for namespace in ("team-a", "team-b")}),
}


@pytest.mark.parametrize("scenario", EXPECTED_GRANTS)
def test_operator_gets_exactly_the_permissions_it_needs(scenario: str) -> None:
    cluster_wide, per_namespace = EXPECTED_GRANTS[scenario]
    found_cluster: Grants = {}
    found_namespaced: dict[str, Grants] = {}
    for role in operator_roles(render(SCENARIOS[scenario])):
        if role["kind"] == "ClusterRole":
            found_cluster |= grants(role)
        else:
            found_namespaced[role["metadata"]["namespace"]] = grants(role)
    assert found_cluster == cluster_wide
    assert found_namespaced == per_namespace


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_rule_grants_secrets(scenario: str) -> None:
    """The operator mounts the Secret a spec names into the pods it creates; it never reads one itself."""
    for role in (o for o in render(SCENARIOS[scenario]) if o["kind"] in {"ClusterRole", "Role"}):
        assert ("", "secrets") not in grants(role), role["metadata"]


def test_peering_can_be_forced_on_for_one_replica_and_its_grants_follow() -> None:
    cluster_wide: Grants = {}
    for role in operator_roles(render({"replicas": 1, "peering": {"enabled": True}})):
        cluster_wide |= grants(role)
    assert cluster_wide == SECURE_CLUSTER | NAMESPACED_GRANTS | CLUSTER_PEERING_GRANTS


def test_metrics_reader_role_grants_get_on_metrics_alone() -> None:
    roles = {o["metadata"]["name"]: o for o in of_kind(render({}), "ClusterRole")}
    assert grants(roles[METRICS_READER]) == {(NON_RESOURCE, "/metrics"): {"get"}}
    # Nobody is bound to it unless metrics.reader.subjects says who.
    assert [b for b in of_kind(render({}), "ClusterRoleBinding") if b["roleRef"]["name"] == METRICS_READER] == []
    plain = render(SCENARIOS["plain-metrics"])
    assert METRICS_READER not in {o["metadata"]["name"] for o in of_kind(plain, "ClusterRole")}


def test_metrics_reader_subjects_are_bound() -> None:
    objects = render(SCENARIOS["metrics-cert-secret"])
    (binding,) = [b for b in of_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"] == METRICS_READER]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": METRICS_READER}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"},
        {"kind": "Group", "name": "sre", "apiGroup": "rbac.authorization.k8s.io"}]
    error = template_error({"metrics": {"reader": {"subjects": [{"kind": "ServiceAccount", "name": "prom"}]}}})
    assert "metrics.reader.subjects: a ServiceAccount needs its namespace" in error


def test_metrics_reviews_stay_cluster_scoped_when_watching_namespaces() -> None:
    objects = render(SCENARIOS["namespaced"])
    for role in of_kind(objects, "Role"):
        assert not METRICS_REVIEW_GRANTS.keys() & grants(role).keys(), role["metadata"]
    (cluster_role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == FULLNAME]
    assert METRICS_REVIEW_GRANTS.items() <= grants(cluster_role).items()


def test_default_user_roles_aggregate_crud_on_the_custom_resources() -> None:
    roles = {o["metadata"]["name"]: o for o in of_kind(render({}), "ClusterRole")}
    edit, view = roles[f"{FULLNAME}-edit"], roles[f"{FULLNAME}-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for cr in CRS:
        assert grants(edit)[("interp.dev", cr)] >= {"create", "update", "patch", "delete"}
        assert grants(view)[("interp.dev", cr)] == READ
        # Status belongs to the operator: users read it, never write it.
        assert grants(edit)[("interp.dev", f"{cr}/status")] == {"get"}
    names = {o["metadata"]["name"] for o in of_kind(render({"rbac": {"aggregateToDefaultRoles": False}}),
                                                    "ClusterRole")}
    assert names == {FULLNAME, METRICS_READER}


# -------------------------------------------------------------------- restricted Pod Security Standard


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_passes_the_restricted_pod_security_standard(scenario: str) -> None:
    templates = dict(pod_templates(render(SCENARIOS[scenario])))
    assert len(templates) == 2, templates.keys()
    for name, template in templates.items():
        assert restricted_violations(template) == [], name
        for container in template["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_operator_has_a_writable_tmp_on_its_read_only_root() -> None:
    pod = the(render({}), "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[mount["name"]]


BREAKERS: list[tuple[Callable[[], PodTemplate], str]] = [
    (lambda: PodTemplate().pod(hostNetwork=True), "hostNetwork"),
    (lambda: PodTemplate().pod(hostPID=True), "hostPID"),
    (lambda: PodTemplate().pod(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "type hostPath"),
    (lambda: PodTemplate().pod_context(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctl"),
    (lambda: PodTemplate().pod_context(runAsUser=0), "pod runAsUser 0"),
    (lambda: PodTemplate().without_pod_context("runAsNonRoot"), "runAsNonRoot"),
    (lambda: PodTemplate().container_context(runAsNonRoot=False), "runAsNonRoot"),
    (lambda: PodTemplate().without_pod_context("seccompProfile"), "seccompProfile"),
    (lambda: PodTemplate().container_context(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
    (lambda: PodTemplate().pod_context(seccompProfile={"type": "Unconfined"})
     .container_context(seccompProfile={"type": "RuntimeDefault"}), "pod seccompProfile"),
    (lambda: PodTemplate().container_context(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda: PodTemplate().container_context(privileged=True), "privileged"),
    (lambda: PodTemplate().container_context(capabilities={"drop": ["NET_RAW"]}), "drop ALL"),
    (lambda: PodTemplate().container_context(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
     "SYS_ADMIN"),
    (lambda: PodTemplate().container_context(procMount="Unmasked"), "procMount"),
    (lambda: PodTemplate().container_context(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions"),
    (lambda: PodTemplate().container_context(windowsOptions={"hostProcess": True}), "hostProcess"),
    (lambda: PodTemplate().container_context(appArmorProfile={"type": "Unconfined"}), "appArmorProfile"),
    (lambda: PodTemplate().annotate("container.apparmor.security.beta.kubernetes.io/main", "unconfined"),
     "apparmor"),
]


@pytest.mark.parametrize(("build", "rule"), BREAKERS, ids=[rule for _, rule in BREAKERS])
def test_restricted_check_catches_each_broken_rule(build: Callable[[], PodTemplate], rule: str) -> None:
    assert restricted_violations(PodTemplate().body) == []
    assert any(rule in violation for violation in restricted_violations(build().body))
