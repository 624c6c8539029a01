"""The process kubelet: containers as local processes, restarts, probes, volumes, env, logs, deletion."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import pytest

from interp_operator.local.testing import wait_for

PY = sys.executable
MERGE = {"Content-Type": "application/merge-patch+json"}


class Pods:
    def __init__(self, endpoint, namespace):
        self.endpoint = endpoint
        self.namespace = namespace
        self.base = f"/api/v1/namespaces/{namespace}/pods"

    def create(self, name, containers, **spec):
        body = {"metadata": {"name": name, "labels": spec.pop("labels", {})},
                "spec": {"containers": containers, **spec}}
        response = self.endpoint.request("POST", self.base, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, name):
        return self.endpoint.request("GET", f"{self.base}/{name}").json()

    def wait_phase(self, name, *phases, timeout=20):
        return wait_for(lambda: self.get(name)["status"]["phase"] in phases and self.get(name), timeout=timeout,
                        message=f"pod {name} never reached {phases}: {self.get(name)['status']}")

    def container(self, name, container="main"):
        statuses = self.get(name)["status"].get("containerStatuses") or []
        return next((s for s in statuses if s["name"] == container), {})

    def ready(self, name):
        conditions = self.get(name)["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def logs(self, name, **params):
        response = self.endpoint.request("GET", f"{self.base}/{name}/log", params=params)
        assert response.status_code == 200, response.text
        return response.text

    def logs_so_far(self, name):
        """The log, or "" while the container has not started (the API answers 400 then)."""
        response = self.endpoint.request("GET", f"{self.base}/{name}/log")
        return response.text if response.status_code == 200 else ""


@pytest.fixture
def pods(kube_endpoint, kube_namespace):
    return Pods(kube_endpoint, kube_namespace)


def main(script, **extra):
    return {"name": "main", "image": "local", "command": [PY, "-c", script], **extra}


def test_pod_runs_to_completion_with_env_and_logs(pods, kube_endpoint, kube_namespace):
    kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/configmaps",
                          json={"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}})
    script = ("import os; print(os.environ['GREETING'], os.environ['MY_POD'], os.environ['MY_NODE'], "
              "os.environ['MEM_MI'], os.environ['POD_IP'], os.getcwd(), '$(GREETING)')")
    container = main(script, args=[], env=[
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
    ], resources={"limits": {"memory": "256Mi", "cpu": "100m"}}, workingDir="/work",
        volumeMounts=[{"name": "work", "mountPath": "/work"}])
    pods.create("done", [container], restartPolicy="Never", volumes=[{"name": "work", "emptyDir": {}}])
    pod = pods.wait_phase("done", "Succeeded")
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    words = pods.logs("done").split()
    assert words[:4] == ["hello", "done", pod["spec"]["nodeName"], "256"]
    assert words[4] == pod["status"]["podIP"] and words[4].startswith("127.")
    assert words[5].endswith("/volumes/work")  # workingDir under a mount maps to the volume's directory


def test_failed_pod_reports_exit_code(pods):
    pods.create("fails", [main("import sys; sys.exit(3)")], restartPolicy="Never")
    pod = pods.wait_phase("fails", "Failed")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"


def test_init_containers_run_first_and_share_volumes(pods):
    init = {"name": "init", "image": "local", "command": [PY, "-c", "open('/shared/x','w').write('from-init')"],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    reader = main("print(open('/shared/x').read())", volumeMounts=[{"name": "shared", "mountPath": "/shared"}])
    pods.create("init", [reader], initContainers=[init], restartPolicy="Never",
                volumes=[{"name": "shared", "emptyDir": {}}])
    pod = pods.wait_phase("init", "Succeeded")
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert pods.logs("init").strip() == "from-init"
    assert pods.logs("init", container="init") == ""


def test_restart_policies(pods):
    pods.create("always", [main("import sys; print('run'); sys.exit(1)")], restartPolicy="Always")
    wait_for(lambda: pods.container("always").get("restartCount", 0) >= 2, timeout=20)
    assert pods.get("always")["status"]["phase"] == "Running"
    assert pods.logs("always", previous="true").strip() == "run"
    counter = ("import os,sys; p=os.environ['POD_DIR_FILE']; n=os.path.exists(p); open(p,'a').close(); "
               "sys.exit(0 if n else 1)")
    pods.create("onfailure", [main(counter, env=[{"name": "POD_DIR_FILE", "value": "/state/flag"}],
                                   volumeMounts=[{"name": "state", "mountPath": "/state"}])],
                restartPolicy="OnFailure", volumes=[{"name": "state", "emptyDir": {}}])
    pod = pods.wait_phase("onfailure", "Succeeded")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1


def test_readiness_and_liveness_probes(pods):
    server = main("import os, http.server; http.server.HTTPServer((os.environ['POD_IP'], 8080), "
                  "http.server.SimpleHTTPRequestHandler).serve_forever()",
                  readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 0.2},
                  ports=[{"containerPort": 8080}])
    pods.create("web-1", [server])
    pods.create("web-2", [server])  # same port, own IP
    wait_for(lambda: pods.ready("web-1") and pods.ready("web-2"), timeout=20,
             message="http readiness never passed")
    assert pods.get("web-1")["status"]["podIP"] != pods.get("web-2")["status"]["podIP"]
    gate = main("import time; time.sleep(600)", readinessProbe={
        "exec": {"command": ["test", "-f", "/flags/ready"]}, "periodSeconds": 0.2},
        volumeMounts=[{"name": "flags", "mountPath": "/flags"}])
    pods.create("gated", [gate], volumes=[{"name": "flags", "emptyDir": {}}])
    wait_for(lambda: pods.get("gated")["status"]["phase"] == "Running")
    time.sleep(0.6)
    assert not pods.ready("gated")
    pods.create("opener", [main("open('/flags/ready','w')",
                                volumeMounts=[{"name": "flags", "mountPath": "/flags"}])],
                restartPolicy="Never", volumes=[{"name": "flags", "hostPath": {
                    "path": str(_pod_volume_dir(pods, "gated", "flags")), "type": "Directory"}}])
    wait_for(lambda: pods.ready("gated"), timeout=10, message="exec readiness never passed")
    live = main("import time; time.sleep(600)", livenessProbe={
        "exec": {"command": ["false"]}, "periodSeconds": 0.2, "failureThreshold": 2})
    pods.create("unlive", [live])
    wait_for(lambda: pods.container("unlive").get("restartCount", 0) >= 1, timeout=20,
             message="a failing liveness probe never restarted the container")


def _pod_volume_dir(pods, name, volume):
    pod = pods.get(name)
    plane = pods.endpoint.local
    md = pod["metadata"]
    return plane.state_dir / "pods" / md["namespace"] / f"{md['name']}-{md['uid'][:8]}" / "volumes" / volume


def test_graceful_deletion_sigterm_then_sigkill(pods):
    polite = main("import signal, sys, time\n"
                  "signal.signal(signal.SIGTERM, lambda *a: (print('bye', flush=True), sys.exit(0)))\n"
                  "print('up', flush=True)\ntime.sleep(600)")
    stubborn = main("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "print('up', flush=True)\ntime.sleep(600)")
    pods.create("polite", [polite], terminationGracePeriodSeconds=30)
    pods.create("stubborn", [stubborn], terminationGracePeriodSeconds=1)
    for name in ("polite", "stubborn"):
        wait_for(lambda n=name: "up" in pods.logs_so_far(n), timeout=20)
    started = time.monotonic()
    pods.endpoint.request("DELETE", f"{pods.base}/polite")
    deleting = pods.get("polite")
    assert deleting["metadata"].get("deletionTimestamp") or deleting.get("code") == 404
    wait_for(lambda: pods.endpoint.request("GET", f"{pods.base}/polite").status_code == 404, timeout=10)
    assert time.monotonic() - started < 5  # exited on SIGTERM, long before the 30 s grace
    started = time.monotonic()
    pods.endpoint.request("DELETE", f"{pods.base}/stubborn")
    wait_for(lambda: pods.endpoint.request("GET", f"{pods.base}/stubborn").status_code == 404, timeout=10)
    assert 0.9 <= time.monotonic() - started < 5  # SIGKILL after the 1 s grace period


def test_configmap_volume_follows_its_source(pods, kube_endpoint, kube_namespace):
    cms = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    kube_endpoint.request("POST", cms, json={"metadata": {"name": "live"}, "data": {"value": "one"}})
    pods.create("watcher", [main("import time\nwhile True:\n    print(open('/cfg/value').read(), flush=True)\n"
                                 "    time.sleep(0.1)", volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])],
                volumes=[{"name": "cfg", "configMap": {"name": "live"}}])
    wait_for(lambda: "one" in pods.logs_so_far("watcher"), timeout=20)
    kube_endpoint.request("PATCH", f"{cms}/live", headers=MERGE, data=json.dumps({"data": {"value": "two"}}))
    wait_for(lambda: "two" in pods.logs("watcher"), timeout=10, message="the configMap file was never updated")


def test_persistent_volume_claims_are_shared_directories(pods, kube_endpoint, kube_namespace):
    claim = kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/persistentvolumeclaims", json={
        "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"],
                                               "resources": {"requests": {"storage": "1Gi"}}}})
    assert claim.status_code == 201
    wait_for(lambda: kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/persistentvolumeclaims/data")
             .json().get("status", {}).get("phase") == "Bound")
    mount = [{"name": "d", "mountPath": "/data"}]
    volumes = [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
    pods.create("writer", [main("open('/data/out.txt','w').write('42')", volumeMounts=mount)],
                restartPolicy="Never", volumes=volumes)
    pods.wait_phase("writer", "Succeeded")
    pods.create("reader", [main("print(open('/data/out.txt').read())", volumeMounts=mount)],
                restartPolicy="Never", volumes=volumes)
    pods.wait_phase("reader", "Succeeded")
    assert pods.logs("reader").strip() == "42"
    pods.create("no-claim", [main("pass", volumeMounts=mount)], restartPolicy="Never",
                volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "absent"}}])

    def unschedulable():  # as kube-scheduler's VolumeBinding says it: the pod is not bound to a node
        return next((c["message"] for c in pods.get("no-claim")["status"].get("conditions") or []
                     if c["type"] == "PodScheduled" and c["status"] == "False"), "")

    wait_for(lambda: 'persistentvolumeclaim "absent" not found' in unschedulable(), timeout=10)
    assert pods.get("no-claim")["status"]["phase"] == "Pending" and not pods.get("no-claim")["spec"].get("nodeName")


def test_services_resolve_to_pod_ips(pods, kube_endpoint, kube_namespace):
    sleeper = main("import time; time.sleep(600)")
    for i in range(2):
        pods.create(f"member-{i}", [sleeper], labels={"app": "gang"}, hostname=f"member-{i}", subdomain="gang")
    kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/services", json={
        "metadata": {"name": "gang"}, "spec": {"clusterIP": "None", "selector": {"app": "gang"},
                                                "ports": [{"port": 29500}]}})
    wait_for(lambda: pods.ready("member-0") and pods.ready("member-1"), timeout=20)
    resolve = main("import socket\nprint(sorted({a[4][0] for a in socket.getaddrinfo('gang', 29500)}))\n"
                   f"print(socket.gethostbyname('member-1.gang.{kube_namespace}.svc.cluster.local'))")
    pods.create("resolver", [resolve], restartPolicy="Never")
    pods.wait_phase("resolver", "Succeeded")
    lines = pods.logs("resolver").splitlines()
    ips = sorted(pods.get(f"member-{i}")["status"]["podIP"] for i in range(2))
    assert lines[0] == str(ips)
    assert lines[1] == pods.get("member-1")["status"]["podIP"]
    endpoints = kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/endpoints/gang").json()
    assert sorted(a["ip"] for a in endpoints["subsets"][0]["addresses"]) == ips
    assert endpoints["subsets"][0]["ports"] == [{"port": 29500, "protocol": "TCP"}]
    slices = kube_endpoint.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/{kube_namespace}/endpointslices",
                                   params={"labelSelector": "kubernetes.io/service-name=gang"}).json()["items"]
    assert sorted(e["addresses"][0] for e in slices[0]["endpoints"] if e["conditions"]["ready"]) == ips
    kube_endpoint.request("DELETE", f"/api/v1/namespaces/{kube_namespace}/services/gang")
    wait_for(lambda: kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/endpoints/gang")
             .status_code == 404, message="endpoints of a deleted service were kept")


def test_container_without_command_reports_a_clear_error(pods):
    pods.create("imageonly", [{"name": "main", "image": "busybox"}], restartPolicy="Never")
    wait_for(lambda: pods.container("imageonly").get("state", {}).get("waiting", {}).get("reason")
             == "CreateContainerConfigError", timeout=10)
    assert "must set a command" in pods.container("imageonly")["state"]["waiting"]["message"]


def test_follow_logs_stream_until_the_container_exits(pods):
    script = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)"
    pods.create("ticker", [main(script)], restartPolicy="Never")
    wait_for(lambda: pods.logs_so_far("ticker"), timeout=20)
    started = time.monotonic()
    with pods.endpoint.request("GET", f"{pods.base}/ticker/log", params={"follow": "true"}, stream=True) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert lines == ["tick 0", "tick 1", "tick 2"]
    assert time.monotonic() - started < 10


def test_scheduler_and_kubelet_post_events(pods, kube_endpoint, kube_namespace):
    pods.create("noted", [main("import sys; sys.exit(1)")], restartPolicy="Always")
    wait_for(lambda: pods.container("noted").get("restartCount", 0) >= 1, timeout=20)

    def reasons():
        events = kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/events",
                                       params={"fieldSelector": "involvedObject.name=noted"}).json()["items"]
        return {e["reason"]: e for e in events}

    seen = wait_for(lambda: (r := reasons()) and {"Scheduled", "Started", "BackOff"} <= set(r) and r, timeout=20)
    assert seen["Scheduled"]["source"]["component"] == "default-scheduler"
    assert seen["BackOff"]["type"] == "Warning"
    wait_for(lambda: reasons()["Started"]["count"] >= 2, timeout=20, message="repeated events are not folded")


def test_secret_and_downward_api_volumes_and_env_from(pods, kube_endpoint, kube_namespace):
    kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/secrets", json={
        "metadata": {"name": "creds"}, "type": "Opaque", "data": {"token": "czNjcjN0"}})
    kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", json={
        "metadata": {"name": "settings"}, "data": {"MODE": "fast", "LEVEL": "3"}})
    script = ("import os; print(open('/secrets/token').read(), open('/info/name').read(), "
              "open('/info/labels').read().replace(chr(10), ';'), os.environ['CFG_MODE'], os.environ['CFG_LEVEL'])")
    container = main(script, envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}], volumeMounts=[
        {"name": "secret", "mountPath": "/secrets"}, {"name": "info", "mountPath": "/info"}])
    pods.create("projected", [container], restartPolicy="Never", labels={"team": "interp"}, volumes=[
        {"name": "secret", "secret": {"secretName": "creds"}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}])
    pods.wait_phase("projected", "Succeeded")
    assert pods.logs("projected").split() == ["s3cr3t", "projected", 'team="interp"', "fast", "3"]


def test_commands_resolve_in_the_control_planes_environment(pods):
    container = {"name": "main", "image": "local", "command": ["python", "-c", "import sys; print(sys.prefix)"]}
    pods.create("which", [container], restartPolicy="Never")
    pods.wait_phase("which", "Succeeded")
    assert pods.logs("which").strip() == sys.prefix


def test_startup_probe_gates_the_others_and_active_deadline_fails_the_pod(pods):
    slow = main("import time; time.sleep(600)",
                startupProbe={"exec": {"command": ["test", "-f", "/flags/started"]}, "periodSeconds": 0.2,
                              "failureThreshold": 1000},
                livenessProbe={"exec": {"command": ["false"]}, "periodSeconds": 0.2, "failureThreshold": 1},
                volumeMounts=[{"name": "flags", "mountPath": "/flags"}])
    pods.create("slowstart", [slow], volumes=[{"name": "flags", "emptyDir": {}}])
    wait_for(lambda: pods.get("slowstart")["status"]["phase"] == "Running", timeout=20)
    time.sleep(1.0)  # the failing liveness probe must not run before the startup probe passes
    status = pods.container("slowstart")
    assert status["restartCount"] == 0 and status["started"] is False and status["ready"] is False
    _pod_volume_dir(pods, "slowstart", "flags").joinpath("started").write_text("")
    wait_for(lambda: pods.container("slowstart").get("restartCount", 0) >= 1, timeout=20,
             message="liveness never ran after the startup probe passed")
    pods.create("deadline", [main("import time; time.sleep(600)")], activeDeadlineSeconds=1,
                terminationGracePeriodSeconds=1)
    pod = pods.wait_phase("deadline", "Failed", timeout=20)
    assert pod["status"]["reason"] == "DeadlineExceeded"


def test_downward_api_files_follow_label_changes_and_tcp_probes(pods, kube_endpoint):
    reader = main("import time\nwhile True:\n    print(open('/info/labels').read().replace(chr(10), ';'), flush=True)\n"
                  "    time.sleep(0.1)", volumeMounts=[{"name": "info", "mountPath": "/info"}])
    pods.create("labelled", [reader], labels={"stage": "one"}, volumes=[{"name": "info", "downwardAPI": {
        "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}])
    wait_for(lambda: 'stage="one"' in pods.logs_so_far("labelled"), timeout=20)
    kube_endpoint.request("PATCH", f"{pods.base}/labelled", headers=MERGE,
                          data=json.dumps({"metadata": {"labels": {"stage": "two"}}}))
    wait_for(lambda: 'stage="two"' in pods.logs_so_far("labelled"), timeout=10,
             message="the downwardAPI file did not follow the label change")
    server = main("import os, socket, time\ns = socket.socket(); s.bind((os.environ['POD_IP'], 7000)); s.listen()\n"
                  "time.sleep(600)", readinessProbe={"tcpSocket": {"port": 7000}, "periodSeconds": 0.2})
    pods.create("tcp", [server])
    wait_for(lambda: pods.ready("tcp"), timeout=20, message="tcpSocket readiness never passed")


CUSTOM_MESSAGE_PATH = f"/tmp/interp-message-{uuid.uuid4().hex[:8]}"
WRITE_MESSAGE = "import os, sys; open(sys.argv[1] if sys.argv[1:] else os.environ['MESSAGE'], 'w').write(MSG)"


def writer(text: str, code: int = 0, **extra):
    """A container that writes ``text`` to the path in $MESSAGE (or its first argument), then exits with ``code``."""
    return main(f"MSG = {text!r}\n{WRITE_MESSAGE}\nprint('some output')\nraise SystemExit({code})", **extra)


def terminated(pods, name):
    return pods.container(name)["state"]["terminated"]


# name -> (container, expected state.terminated: exitCode and message, None for no message)
TERMINATION_CASES = {
    "msg-env": (writer('{"verified": true}', env=[{"name": "MESSAGE", "value": "/dev/termination-log"}]),
                0, '{"verified": true}'),
    "msg-arg": (writer("from args", args=["/dev/termination-log"]), 0, "from args"),
    "msg-custom-path": (writer("custom", terminationMessagePath=CUSTOM_MESSAGE_PATH,
                               env=[{"name": "MESSAGE", "value": CUSTOM_MESSAGE_PATH}]), 0, "custom"),
    "msg-truncated": (writer("x" * 5000, env=[{"name": "MESSAGE", "value": "/dev/termination-log"}]), 0, "x" * 4096),
    "msg-none": (main("pass"), 0, None),
    "msg-fails-file": (main("print('oops'); raise SystemExit(2)"), 2, None),
    "msg-fails-fallback": (main("for i in range(100): print('line', i)\nraise SystemExit(1)",
                                terminationMessagePolicy="FallbackToLogsOnError"),
                           1, "".join(f"line {i}\n" for i in range(20, 100))),
    "msg-fallback-big-lines": (main("for i in range(10): print(str(i) * 500)\nraise SystemExit(1)",
                                    terminationMessagePolicy="FallbackToLogsOnError"),
                               1, ("".join(str(i) * 500 + "\n" for i in range(10)))[-2048:]),
    "msg-file-wins": (writer("written", code=1, env=[{"name": "MESSAGE", "value": "/dev/termination-log"}],
                             terminationMessagePolicy="FallbackToLogsOnError"), 1, "written"),
    "msg-succeeds-no-fallback": (main("print('fine')", terminationMessagePolicy="FallbackToLogsOnError"), 0, None),
}


def test_termination_messages_reach_the_container_status(pods):
    for name, (container, _, _) in TERMINATION_CASES.items():
        pods.create(name, [container], restartPolicy="Never")
    for name, (_, code, message) in TERMINATION_CASES.items():
        pods.wait_phase(name, "Succeeded", "Failed")
        state = terminated(pods, name)
        assert (state["exitCode"], state.get("message")) == (code, message), name
    assert not os.path.exists(CUSTOM_MESSAGE_PATH)  # the container path was mapped to the pod's file, even in /tmp


def test_a_restarted_container_starts_without_the_last_message(pods):
    script = ("import os, sys; p = os.environ['FLAG']; first = not os.path.exists(p); open(p, 'a').close()\n"
              "if first:\n    open(os.environ['MESSAGE'], 'w').write('first run')\n    sys.exit(1)")
    container = main(script, env=[{"name": "MESSAGE", "value": "/dev/termination-log"},
                                  {"name": "FLAG", "value": "/state/flag"}],
                     volumeMounts=[{"name": "state", "mountPath": "/state"}])
    pods.create("msg-restart", [container], restartPolicy="OnFailure", volumes=[{"name": "state", "emptyDir": {}}])
    pods.wait_phase("msg-restart", "Succeeded")
    status = pods.container("msg-restart")
    assert status["lastState"]["terminated"]["message"] == "first run"
    assert "message" not in status["state"]["terminated"]
