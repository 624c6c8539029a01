"""A tiny kopf operator for Widgets, run by test_kopf.py against the local control plane."""

import kopf


@kopf.on.login()
def login(**kwargs):
    # kopf's default login goes through the kubernetes client, whose kubeconfig path is fixed when it is first
    # imported; reading $KUBECONFIG now keeps the test independent of import order.
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Explicit watch timeouts: without them kopf can hang on a silently dropped watch.
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 10
    settings.persistence.finalizer = "tests.interp.dev/kopf"
    settings.posting.level = 20


@kopf.on.create("tests.interp.dev", "v1", "widgets")
def created(body, spec, patch, **_):
    patch.status["replicas"] = spec["replicas"]
    patch.status["conditions"] = [{"type": "Ready", "status": "True", "reason": "Created"}]
    kopf.info(body, reason="Created", message="widget created")


@kopf.on.update("tests.interp.dev", "v1", "widgets", field="spec.replicas")
def scaled(new, patch, **_):
    patch.status["replicas"] = new


@kopf.on.delete("tests.interp.dev", "v1", "widgets")
def deleted(body, **_):
    kopf.info(body, reason="Deleting", message="widget released")
