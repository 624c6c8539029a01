"""High availability in the chart: replicas joined by kopf peering, the peering CRDs and objects, the
PodDisruptionBudget and the rollout strategy that go with them.

Whether two operator processes really leave one active is checked against interp-local in
test_chart_peering_local.py.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_chart import CHART, NAMESPACE, RELEASE, SCENARIOS, helm, of_kind, render, template_error, the

FULLNAME = f"{RELEASE}-interp-operator"
PEERING_CRDS = {"clusterkopfpeerings.kopf.dev": ("Cluster", "ClusterKopfPeering"),
                "kopfpeerings.kopf.dev": ("Namespaced", "KopfPeering")}


def args(objects: list[dict[str, Any]]) -> list[str]:
    (container,) = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container["args"]


def peering_arg(objects: list[dict[str, Any]]) -> str | None:
    arguments = args(objects)
    return arguments[arguments.index("--peering") + 1] if "--peering" in arguments else None


def peering_objects(objects: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return sorted((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects
                  if o["apiVersion"] == "kopf.dev/v1")


# ------------------------------------------------------------------------------------------- peering


def test_two_replicas_join_the_cluster_peering_by_default() -> None:
    objects = render({})
    assert the(objects, "Deployment")["spec"]["replicas"] == 2
    assert peering_arg(objects) == FULLNAME
    assert peering_objects(objects) == [("ClusterKopfPeering", None, FULLNAME)]


def test_one_replica_runs_standalone_without_peering_objects() -> None:
    objects = render(SCENARIOS["single-replica"])
    assert the(objects, "Deployment")["spec"]["replicas"] == 1
    assert peering_arg(objects) is None
    assert peering_objects(objects) == []


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_join_the_cluster_peering_the_chart_creates(replicas: int) -> None:
    objects = render({"replicas": replicas})
    assert the(objects, "Deployment")["spec"]["replicas"] == replicas
    assert peering_arg(objects) == FULLNAME
    assert peering_objects(objects) == [("ClusterKopfPeering", None, FULLNAME)]


def test_namespaced_replicas_join_a_peering_in_each_watched_namespace() -> None:
    objects = render(SCENARIOS["namespaced-ha"])
    assert peering_arg(objects) == FULLNAME
    assert peering_objects(objects) == [("KopfPeering", "team-a", FULLNAME), ("KopfPeering", "team-b", FULLNAME)]


def test_peering_name_and_switch() -> None:
    named = render({"replicas": 2, "peering": {"enabled": "auto", "name": "interp.prod"}})
    assert peering_arg(named) == "interp.prod"
    assert peering_objects(named) == [("ClusterKopfPeering", None, "interp.prod")]
    # Forced on for one replica: the surge pod of a rollout joins the peering instead of a Recreate gap.
    forced = render({"replicas": 1, "peering": {"enabled": True}})
    assert peering_arg(forced) == FULLNAME
    assert peering_objects(forced) == [("ClusterKopfPeering", None, FULLNAME)]
    assert the(forced, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_replicas_without_peering_are_refused() -> None:
    error = template_error({"replicas": 2, "peering": {"enabled": False}})
    assert "replicas > 1 needs peering.enabled" in error


def test_rollout_strategy_follows_peering() -> None:
    alone = the(render(SCENARIOS["single-replica"]), "Deployment")["spec"]["strategy"]
    assert alone == {"type": "Recreate"}, "two unpeered operators must never overlap"
    peered = the(render({}), "Deployment")["spec"]["strategy"]
    assert peered == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_chart_ships_kopf_peering_crds_as_kopf_defines_them() -> None:
    crds = {c["metadata"]["name"]: c for c in (yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text()))}
    assert set(crds) == set(PEERING_CRDS)
    for name, (scope, kind) in PEERING_CRDS.items():
        spec = crds[name]["spec"]
        assert (spec["group"], spec["scope"], spec["names"]["kind"]) == ("kopf.dev", scope, kind)
        assert spec["names"]["plural"] == name.split(".")[0]
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        # kopf writes one entry per peer (its identity) into status: those keys are not known in advance.
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        # kopf patches the whole object, status included: a status subresource would drop its entries.
        assert "subresources" not in version
        kubernetes_validate.validate(crds[name], "1.29.0", strict=True)


def test_helm_installs_the_peering_crds_before_the_templates() -> None:
    """Only the crds/ folder is applied before the release's objects are mapped, so the peering objects
    can be created by the same `helm install` that brings their CRDs."""
    with_crds = render({"replicas": 2}, include_crds=True)
    names = {c["metadata"]["name"] for c in of_kind(with_crds, "CustomResourceDefinition")}
    assert set(PEERING_CRDS) <= names
    templated = {c["metadata"]["name"] for c in of_kind(render({"replicas": 2}), "CustomResourceDefinition")}
    assert not set(PEERING_CRDS) & templated


# ------------------------------------------------------------------------------------ disruption budget


def test_budget_only_with_replicas_to_spare_by_default() -> None:
    assert of_kind(render(SCENARIOS["single-replica"]), "PodDisruptionBudget") == []
    objects = render({})
    budget = the(objects, "PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pod_labels = the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not budget["spec"]["selector"]["matchLabels"].items() <= the(objects, "Pod")["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"minAvailable": 2}, {"minAvailable": 2}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"maxUnavailable": "34%"}, {"maxUnavailable": "34%"}),
    ],
)
def test_budget_takes_min_available_or_max_unavailable(budget: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = the(render({"replicas": 3, "podDisruptionBudget": {"enabled": "auto", **budget}}),
               "PodDisruptionBudget")["spec"]
    assert {k: v for k, v in spec.items() if k in {"minAvailable", "maxUnavailable"}} == expected


def test_budget_switch_overrides_auto() -> None:
    assert of_kind(render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == []
    forced = render({"replicas": 1, "podDisruptionBudget": {"enabled": True}})
    assert the(forced, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_budget_that_would_block_every_drain_is_refused() -> None:
    message = "podDisruptionBudget.minAvailable 2 with 2 replicas would block every node drain"
    assert message in template_error({"replicas": 2, "podDisruptionBudget": {"enabled": "auto", "minAvailable": 2}})
    # --set makes the number an int64 where values files and --set-json give a float64.
    result = helm("template", RELEASE, str(CHART), "--set", "replicas=2", "--set", "podDisruptionBudget.minAvailable=2")
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_default_spread_puts_replicas_on_different_nodes_when_it_can() -> None:
    objects = render({"replicas": 2})
    template = the(objects, "Deployment")["spec"]["template"]
    (spread,) = template["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway", "a one-node cluster must still run both"
    assert spread["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
