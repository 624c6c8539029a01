"""Gang engine throughput on the local control plane (API only: pods are created, not run).

1. One 256-pod SAETrainingJob: time from creating the object until all 256 pods exist, vs the API's own ceiling
   measured in the same run (a plain client creating 256 equivalent pods with as many threads as the operator).
2. 1,000 one-pod jobs created at once: time until every pod exists, and the operator's resident memory.

    python bench/bench_gang.py [--pods 256] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

from interp_operator.api.common import GangSpec, SchedulingSpec
from interp_operator.gang import builders
from interp_operator.local.nodes import NodeConfig
from interp_operator.local.plane import ControlPlane, PlaneConfig
from interp_operator.local.testing import session_for

REPO = Path(__file__).resolve().parents[1]
NODES = 64
GPUS_PER_NODE = 8


def job(name: str, replicas: int) -> dict:
    return {
        "apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": {"name": name},
        "spec": {
            "model": {"hubId": "tiny/model"},
            "data": {"activationDump": {"name": "acts"}},
            "saes": [{"name": "s", "hookPoint": "resid_post.0", "dictSize": 64, "k": 4}],
            "training": {"tokens": 4096, "batchSizeTokens": 4096},
            "output": {"claimName": "data"},
            "gang": {"replicas": replicas, "resources": {"limits": {"nvidia.com/gpu": 1}}},
        },
    }


class Bench:
    def __init__(self, plane: ControlPlane, workdir: Path):
        self.kubeconfig = plane.write_kubeconfig(workdir / "kubeconfig")
        self.base, self.session = session_for(self.kubeconfig)
        self.workdir = workdir

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        # verify passed explicitly: REQUESTS_CA_BUNDLE would otherwise override the session's CA.
        return self.session.request(method, self.base + path, timeout=60, verify=self.session.verify, **kwargs)

    def setup(self) -> None:
        for path in sorted((REPO / "crds").glob("*.yaml")):
            self.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                      json=yaml.safe_load(path.read_text()))
        for i in range(NODES):
            node = NodeConfig(f"bench-{i}", cpu="64", memory="512Gi", gpus=GPUS_PER_NODE,
                              labels={"topology.kubernetes.io/rack": f"rack-{i // 8}"}).node_object()
            self.call("POST", "/api/v1/nodes", json=node).raise_for_status()
        for namespace in ("gang", "many", "ceiling"):
            self.call("POST", "/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()

    def watch_pods(self, namespace: str, count: int) -> threading.Event:
        """Count pod ADDED events from a watch (listing would load the server more than the operator does);
        the returned event is set, and ``self.done_at`` recorded, when ``count`` pods exist."""
        done = threading.Event()
        ready = threading.Event()

        def follow() -> None:
            seen = 0
            with self.session.get(self.base + f"/api/v1/namespaces/{namespace}/pods",
                                  params={"watch": "1", "timeoutSeconds": "900"}, stream=True,
                                  verify=self.session.verify, timeout=900) as response:
                ready.set()
                for line in response.iter_lines():
                    if line and json.loads(line)["type"] == "ADDED":
                        seen += 1
                        if seen == count:
                            self.done_at = time.perf_counter()
                            done.set()
                            return

        threading.Thread(target=follow, daemon=True).start()
        ready.wait(30)
        return done

    def operator(self) -> subprocess.Popen:
        env = os.environ | {"KUBECONFIG": str(self.kubeconfig), "INTERP_LOG_LEVEL": "warning",
                            "INTERP_LOG_FORMAT": "json"}
        log = (self.workdir / "operator.log").open("w")
        process = subprocess.Popen([sys.executable, "-P", "-m", "interp_operator.cli", "-A", "--metrics-port", "0",
                                    "--health-port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(3)  # kopf's start-up: login, resource scan, initial lists
        return process

    def create_job(self, namespace: str, body: dict) -> None:
        self.call("POST", f"/apis/interp.dev/v1alpha1/namespaces/{namespace}/saetrainingjobs",
                  json=body).raise_for_status()

    def ceiling(self, pods: int) -> float:
        """pods/s of a plain client creating the same pods with the operator's concurrency."""
        plan = builders.GangPlan(
            owner=builders.Owner("interp.dev/v1alpha1", "SAETrainingJob", "ceiling", "ceiling", "uid"),
            worker=GangSpec.model_validate(job("x", 1)["spec"]["gang"]),
            scheduling=SchedulingSpec(),
            module="interp_workloads.train", attempt=1, size=pods,
        )
        bodies = [builders.pod(plan, rank) for rank in range(pods)]
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda b: self.call("POST", "/api/v1/namespaces/ceiling/pods", json=b).raise_for_status(),
                          bodies))
        return pods / (time.perf_counter() - start)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ControlPlane.in_thread(
        PlaneConfig(run_pods=False, nodes=[], state_dir=Path(tmp) / "state")
    ) as plane:
        bench = Bench(plane, Path(tmp))
        bench.setup()
        ceiling = bench.ceiling(args.pods)
        operator = bench.operator()
        try:
            rss_idle = rss_mib(operator.pid)
            gang_done = bench.watch_pods("gang", args.pods)
            start = time.perf_counter()
            bench.create_job("gang", job("big", args.pods))
            if not gang_done.wait(300):
                raise TimeoutError("the 256-pod gang was not created within 300 s")
            gang_rate = args.pods / (bench.done_at - start)
            many_done = bench.watch_pods("many", args.jobs)
            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: bench.create_job("many", job(f"j{i}", 1)), range(args.jobs)))
            created = time.perf_counter() - start
            if not many_done.wait(600):
                raise TimeoutError(f"the pods of {args.jobs} jobs were not created within 600 s")
            many_seconds = bench.done_at - start
            rss_loaded = rss_mib(operator.pid)
        except Exception:
            print((Path(tmp) / "operator.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            operator.terminate()
            operator.wait(30)
    result = {
        "gang_pods": args.pods,
        "gang_pods_per_s": round(gang_rate, 1),
        "api_ceiling_pods_per_s": round(ceiling, 1),
        "ratio_to_ceiling": round(gang_rate / ceiling, 2),
        "jobs": args.jobs,
        "jobs_created_s": round(created, 1),
        "jobs_all_pods_s": round(many_seconds, 1),
        "jobs_per_s": round(args.jobs / many_seconds, 1),
        "operator_rss_mib_idle": round(rss_idle, 1),
        "operator_rss_mib_after": round(rss_loaded, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
