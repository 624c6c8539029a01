"""Pod creations per second through interp-local's API (HTTPS + token, JSON), and object-count scale.

    PYTHONSAFEPATH=1 .venv/bin/python bench/bench_local_apiserver.py [--pods 256] [--concurrency 16]

Creates ``--pods`` pods through the REST API with an aiohttp client, ``--concurrency`` requests in
flight, against a control plane whose scheduler is running (the pods name another scheduler, so no
process starts and the number measures the API path: parsing, admission, storage, watch fan-out).
Then ``--running-pods`` pods for the default scheduler, each starting a ``sleep`` process (time until all
are Running), and finally the store filled to 1,000 custom resources and 10,000 pods (list latency, memory).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "benches.bench.interp.dev"},
    "spec": {"group": "bench.interp.dev", "scope": "Namespaced", "names": {"plural": "benches", "kind": "Bench"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                               "type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0,
                                                                             "default": 1}},
                               "x-kubernetes-validations": [{"rule": "self.replicas < 100"}]}}}}}]},
}


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "yes"}},
            "spec": {"schedulerName": "bench-not-scheduled", "containers": [
                {"name": "main", "image": "local", "command": ["sleep", "1"],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


async def create_many(session: aiohttp.ClientSession, url: str, bodies: list[dict], concurrency: int) -> float:
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as r:
                if r.status != 201:
                    raise RuntimeError(f"create failed: {r.status} {await r.text()}")
                await r.read()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def pods_to_running(s: aiohttp.ClientSession, count: int, concurrency: int) -> dict:
    """Scheduled pods whose process starts: seconds from the first create until all are Running."""
    await (await s.post("/api/v1/namespaces", json={"metadata": {"name": "running"}})).read()
    bodies = []
    for i in range(count):
        body = pod(f"r-{i}")
        body["spec"]["schedulerName"] = "default-scheduler"
        body["spec"]["containers"][0]["command"] = ["sleep", "60"]
        body["spec"]["terminationGracePeriodSeconds"] = 1
        bodies.append(body)
    started = time.perf_counter()
    await create_many(s, "/api/v1/namespaces/running/pods", bodies, concurrency)
    while True:
        async with s.get("/api/v1/namespaces/running/pods", params={"fieldSelector": "status.phase=Running"}) as r:
            if len((await r.json())["items"]) == count:
                break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    async with s.delete("/api/v1/namespaces/running/pods") as r:
        await r.read()
    return {"pods": count, "seconds": round(seconds, 2), "per_s": round(count / seconds, 1)}


async def run(base: str, token: str, ca: Path, pods: int, concurrency: int, scale: bool,
              running_pods: int) -> dict:
    context = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {token}"}
    results: dict = {}
    async with aiohttp.ClientSession(base, headers=headers, connector=aiohttp.TCPConnector(ssl=context,
                                                                                           limit=concurrency)) as s:
        for round_ in range(3):
            ns = f"bench-{round_}"
            await (await s.post("/api/v1/namespaces", json={"metadata": {"name": ns}})).read()
            seconds = await create_many(s, f"/api/v1/namespaces/{ns}/pods",
                                        [pod(f"p-{i}") for i in range(pods)], concurrency)
            results.setdefault("pod_create_per_s", []).append(round(pods / seconds, 1))
        results["pods_to_running"] = await pods_to_running(s, running_pods, concurrency)
        if scale:
            await (await s.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD)).read()
            await (await s.post("/api/v1/namespaces", json={"metadata": {"name": "scale"}})).read()
            crs = [{"apiVersion": "bench.interp.dev/v1", "kind": "Bench", "metadata": {"name": f"b-{i}"},
                    "spec": {"replicas": i % 50}} for i in range(1000)]
            seconds = await create_many(s, "/apis/bench.interp.dev/v1/namespaces/scale/benches", crs, concurrency)
            results["cr_create_per_s"] = round(1000 / seconds, 1)
            existing = 3 * pods
            seconds = await create_many(s, "/api/v1/namespaces/scale/pods",
                                        [pod(f"s-{i}") for i in range(10000 - existing)], concurrency)
            results["bulk_pod_create_per_s"] = round((10000 - existing) / seconds, 1)
            started = time.perf_counter()
            async with s.get("/api/v1/pods") as r:
                items = (await r.json())["items"]
            results["list_10k_pods_s"] = round(time.perf_counter() - started, 3)
            results["pods_in_store"] = len(items)
            started = time.perf_counter()
            async with s.get("/api/v1/pods", params={"labelSelector": "bench=yes", "limit": "500"}) as r:
                await r.read()
            results["list_500_of_10k_with_selector_s"] = round(time.perf_counter() - started, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--running-pods", type=int, default=64, help="pods that really start a process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        # The server runs in its own process, as `interp-local up` does, so the client does not share its GIL.
        server = subprocess.Popen([sys.executable, "-m", "interp_operator.local.cli", "up", "--kubeconfig",
                                   str(kubeconfig), "--state-dir", str(Path(tmp) / "state")],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONSAFEPATH": "1"})
        try:
            ready = server.stdout.readline() if server.stdout else ""
            if not ready.startswith("interp-local ready"):
                raise SystemExit(f"the control plane did not start: {ready!r}")
            doc = yaml.safe_load(kubeconfig.read_text())
            ca = Path(tmp) / "ca.crt"
            ca.write_bytes(base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]))
            results = asyncio.run(run(doc["clusters"][0]["cluster"]["server"], doc["users"][0]["user"]["token"],
                                      ca, args.pods, args.concurrency, not args.no_scale, args.running_pods))
            results["server_rss_mib"] = _rss_mib(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    print(json.dumps(results, indent=2))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


if __name__ == "__main__":
    main()
