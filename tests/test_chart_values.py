"""Values a platform team sets on an operator chart: a pinned digest, extra volumes, spread constraints, a
projected API token, ServiceMonitor placement/relabeling/TLS, and the optional NetworkPolicy."""

from __future__ import annotations

from typing import Any

from helm_chart import (
    DIGEST,
    NAMESPACE,
    PROJECTED_TOKEN,
    SCENARIOS,
    TOKEN_DIR,
    of_kind,
    render,
    template_error,
    the,
)


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return the(objects, "Deployment")["spec"]["template"]["spec"]


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


# -------------------------------------------------------------------------------------------- image


def test_digest_pins_the_operator_the_workloads_and_the_test_pod() -> None:
    objects = render({"image": {"tag": "0.2.0", "digest": DIGEST}})
    expected = f"ghcr.io/interp-operator/interp-operator@{DIGEST}"
    (container,) = pod_spec(objects)["containers"]
    assert container["image"] == expected
    assert env(container)["INTERP_WORKLOAD_IMAGE"] == expected
    assert the(objects, "Pod")["spec"]["containers"][0]["image"] == expected
    # The version label still says which release it is.
    assert the(objects, "Deployment")["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"


def test_without_digest_the_tag_is_used() -> None:
    (container,) = pod_spec(render({"image": {"tag": "0.2.0"}}))["containers"]
    assert container["image"] == "ghcr.io/interp-operator/interp-operator:0.2.0"


# ------------------------------------------------------------------------------------ volumes, spread


def test_extra_volumes_are_added_next_to_the_writable_tmp() -> None:
    values = SCENARIOS["hardened"]
    pod = pod_spec(render(values))
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "api-token", "ca-bundle"]
    assert pod["volumes"][1:] == values["extraVolumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert mounts[0] == {"name": "tmp", "mountPath": "/tmp"}
    assert mounts[1:] == values["extraVolumeMounts"]


def test_an_extra_volume_cannot_replace_tmp() -> None:
    error = template_error({"extraVolumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]})
    assert "the volume name tmp is the chart's own" in error


def test_spread_constraints_keep_a_selector_of_their_own() -> None:
    own = {"matchLabels": {"example.com/pool": "ops"}}
    constraints = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"},
                   {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": own}]
    objects = render({"replicas": 2, "topologySpreadConstraints": constraints})
    zone, host = pod_spec(objects)["topologySpreadConstraints"]
    selector = the(objects, "Service")["spec"]["selector"]
    assert zone == {**constraints[0], "labelSelector": {"matchLabels": selector}}
    assert host == constraints[1]
    assert "topologySpreadConstraints" not in pod_spec(render({"topologySpreadConstraints": []}))


# --------------------------------------------------------------------------------------- API token


def test_token_is_automounted_by_default() -> None:
    objects = render({})
    assert the(objects, "ServiceAccount")["automountServiceAccountToken"] is True
    assert pod_spec(objects)["automountServiceAccountToken"] is True


def test_a_projected_token_replaces_the_automounted_one() -> None:
    objects = render(PROJECTED_TOKEN)
    assert the(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    pod = pod_spec(objects)
    assert pod["automountServiceAccountToken"] is False
    assert TOKEN_DIR in [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]


def test_no_token_at_all_is_refused() -> None:
    error = template_error({"serviceAccount": {"create": True, "automount": False}})
    assert "serviceAccount.automount is false but no extraVolumeMounts entry mounts a token" in error


# ---------------------------------------------------------------------------------- ServiceMonitor


def test_service_monitor_namespace_relabelings_and_tls() -> None:
    values = SCENARIOS["hardened"]["metrics"]["serviceMonitor"]
    monitor = the(render(SCENARIOS["hardened"]), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    # It still selects the Service in the release's namespace, wherever the monitor itself lives.
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"] == values["relabelings"]
    # A TLS setting of one's own replaces the default insecureSkipVerify of the secure endpoint.
    assert endpoint["tlsConfig"] == values["tlsConfig"]
    assert endpoint["scheme"] == "https"
    assert endpoint["bearerTokenFile"] == TOKEN_DIR + "/token"


def test_service_monitor_defaults_to_the_release_namespace() -> None:
    monitor = the(render(SCENARIOS["service-monitor"]), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    (endpoint,) = monitor["spec"]["endpoints"]
    assert "relabelings" not in endpoint


# ---------------------------------------------------------------------------------- NetworkPolicy


def ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_no_network_policy_unless_enabled() -> None:
    assert of_kind(render({}), "NetworkPolicy") == []


def test_network_policy_admits_only_what_the_operator_needs() -> None:
    objects = render(SCENARIOS["network-policy"])
    policy = the(objects, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"] == {"matchLabels": the(objects, "Service")["spec"]["selector"]}
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ports(ingress) == {("metrics", "TCP"), ("health", "TCP")}
    assert "from" not in ingress
    container_ports = {p["name"] for p in pod_spec(objects)["containers"][0]["ports"]}
    assert {port for port, _ in ports(ingress)} == container_ports
    api, dns, progress = policy["spec"]["egress"]
    assert ports(api) == {(443, "TCP"), (6443, "TCP")} and "to" not in api
    assert ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert ports(progress) == {(9400, "TCP")}
    # The labels the operator puts on every pod it creates (interp_operator.gang.naming.pod_labels).
    assert progress["to"] == [{"namespaceSelector": {},
                               "podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "interp-operator"}}}]


def test_namespaced_network_policy_narrows_every_peer() -> None:
    values = SCENARIOS["namespaced-network-policy"]["networkPolicy"]
    objects = render(SCENARIOS["namespaced-network-policy"])
    policy = the(objects, "NetworkPolicy")
    (ingress,) = policy["spec"]["ingress"]
    *sources, test_pod = ingress["from"]
    assert sources == values["ingressFrom"]
    # `helm test` still reaches the metrics port it checks, and only that pod of the release does.
    assert test_pod["podSelector"]["matchLabels"].items() <= the(objects, "Pod")["metadata"]["labels"].items()
    assert not test_pod["podSelector"]["matchLabels"].items() <= \
        the(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    without_test = render({**SCENARIOS["namespaced-network-policy"], "helmTest": {"enabled": False}})
    assert the(without_test, "NetworkPolicy")["spec"]["ingress"][0]["from"] == values["ingressFrom"]
    api, _dns, progress, extra = policy["spec"]["egress"]
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    assert progress["to"][0]["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]}]}
    assert extra == values["extraEgress"][0]


def test_dns_rule_can_be_left_out() -> None:
    policy = the(render({"networkPolicy": {"enabled": True, "dnsTo": []}}), "NetworkPolicy")
    assert [53 in {p["port"] for p in rule["ports"]} for rule in policy["spec"]["egress"]] == [False, False]
