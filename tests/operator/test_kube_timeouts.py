"""Every request the operator makes gives up after its timeout: an API server that accepts a connection and never
answers (a connection that died silently) must not hold an object's reconcile loop forever."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from interp_operator import kube as kube_module
from interp_operator.api import KINDS
from interp_operator.kube import Kube

TIMEOUT_S = 0.3
JOB = next(k for k in KINDS if k.kind == "SAETrainingJob")
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": {}}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and reads requests, never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


CALLS = {
    "patch_status": lambda k: k.patch_status(JOB, "ns", "job", {"phase": "Running"}),
    "get": lambda k: k.get(JOB, "ns", "job"),
    "delete": lambda k: k.delete(JOB, "ns", "job"),
    "create": lambda k: k.create(POD),
    "replace_config_map": lambda k: k.replace_config_map(CONFIG_MAP),
    "delete_pods": lambda k: k.delete_pods("ns", ["p"]),
    "annotate_pods": lambda k: k.annotate_pods("ns", ["p"], {"a": "b"}),
    "post_event": lambda k: k.post_event("ns", {"metadata": {"generateName": "e"}}),
    "bump_event": lambda k: k.bump_event("ns", "e", 2, "2026-01-01T00:00:00Z"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_request_to_a_server_that_never_answers_times_out(silent_server, monkeypatch, call):
    monkeypatch.setattr(kube_module, "REQUEST_TIMEOUT_S", TIMEOUT_S)
    monkeypatch.setitem(kube_module._CALL, "_request_timeout", TIMEOUT_S)
    configuration = client.Configuration(host=silent_server)
    kube = Kube(client.ApiClient(configuration))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            CALLS[call](kube)
        except Exception as err:  # the timeout, as whatever the client library raises
            outcome.append(err)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)  # the client library retries idempotent requests a few times
    assert not thread.is_alive(), f"{call} still waits after 15 s: no request timeout"
    assert outcome and outcome[0] is not None and "timed out" in repr(outcome[0]).lower(), outcome
    assert time.monotonic() - started < 15
