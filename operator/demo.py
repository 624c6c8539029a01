"""`make demo`: what interp-operator does today, end to end on this machine, with nothing faked.

1. The microscope: a tiny GPT-2 (random weights, tokenizer trained here) loaded through the real loading code;
   activations captured and checked against Hugging Face's hidden states, a steering vector, an exact SAE splice,
   attribution.
2. The cluster: interp-local (an embedded control plane with four GPU nodes in two racks), the CRDs applied with
   kubectl, an invalid object refused at apply time, and the operator running an SAETrainingJob as a 2-pod
   torch.distributed gang packed into one rack; one rank is killed, the whole gang restarts and resumes from its
   checkpoint. The gang runs the gang self-test workload (interp_workloads.probe): the SAE trainer arrives with
   its own milestone.
3. An ActivationDump: two extraction pods run the tiny GPT-2 over a corpus on the volume and write a shuffled,
   checksummed activation store; the status reports shards, tokens and the manifest only once it verifies, and the
   store is read back with the reader SAE training uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("INTERP_DEMO_DIR", REPO / ".cache" / "demo"))
NAMESPACE = "interp-demo"
RACK = "topology.kubernetes.io/rack"


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def microscope() -> Path:
    import torch

    from interp_workloads.instrument import SparseAutoencoder, attribute, capture, forward
    from interp_workloads.models import load_model
    from interp_workloads.spec import AddVector, ModelSpec, SAESplice
    from interp_workloads.spec.run import Objective
    from interp_workloads.spec.sae import SAEConfig
    from interp_workloads.testing import build_tiny_model

    say("1. The microscope: a tiny GPT-2 built here, loaded through the real loading code (safetensors only)")
    path = build_tiny_model("gpt2", WORK / "model", n_layers=4, d_model=64)
    loaded = load_model(ModelSpec(model=str(path)))
    batch = loaded.tokenize(["the gang restarts together", "activations are stored in shards"])
    with torch.no_grad():
        reference = loaded.model(**batch, output_hidden_states=True).hidden_states
    # hidden_states[i + 1] is block i's output (the last entry has the final LayerNorm applied, so it is skipped)
    acts = capture(loaded.model, batch, ["resid_post.1", "resid_post.2"])
    error = max((acts[f"resid_post.{i}"] - reference[i + 1]).abs().max().item() for i in (1, 2))
    print(f"captured resid_post.1 and resid_post.2 {tuple(acts['resid_post.1'].shape)} (stopping after block 2); "
          f"max |difference| from output_hidden_states: {error:.2e}")

    base = forward(loaded.model, batch).logits
    direction = torch.randn(64)
    steer = AddVector(hook="resid_post.1", vector=(direction / direction.norm()).tolist(), scale=8.0)
    steered = forward(loaded.model, batch, interventions=[[steer], []]).logits
    print(f"steering row 0 only: row 0 logits moved by {(steered[0] - base[0]).abs().max().item():.3f}, "
          f"row 1 by {(steered[1] - base[1]).abs().max().item():.1e} (per-row interventions in one batch)")

    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=256, activation="topk", k=8))
    splice = SAESplice(hook="resid_post.2", sae="demo", edits=[])
    spliced = forward(loaded.model, batch, interventions=[[splice], [splice]], saes={"demo": sae}).logits
    print(f"unedited SAE splice (reconstruction error added back): max |logit change| "
          f"{(spliced - base).abs().max().item():.1e}")

    result = attribute(loaded.model, batch, ["resid_post.1"], Objective(kind="loss"))
    scores = result.attribution["resid_post.1"][0]
    print(f"attribution of the LM loss to resid_post.1 positions (row 0): {[round(v, 3) for v in scores.tolist()]}")
    return path


class Kubectl:
    def __init__(self, kubeconfig: Path):
        self.base = [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={kubeconfig}",
                     f"--cache-dir={WORK / 'kubectl-cache'}"]

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def show(self, *args: str) -> None:
        print(f"$ kubectl {' '.join(args)}\n{self(*args).stdout.rstrip()}", flush=True)


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"storage": {"claimName": "data", "subPath": "models/tiny-gpt2", "readOnly": True}},
            "data": {"onTheFly": {"dataset": {"source": {"claimName": "data", "subPath": "corpus"}}}},
            "saes": [{"name": "l1-topk", "hookPoint": "resid_post.1", "dictSize": 256, "k": 8}],
            "training": {"tokens": 65536, "batchSizeTokens": 4096},
            "output": {"claimName": "data", "subPath": f"saes/{name}"},
            "gang": {"replicas": 2, "resources": {"limits": {"nvidia.com/gpu": 1}},
                     "env": [{"name": "INTERP_PROBE_STEPS", "value": "12"},
                             {"name": "INTERP_PROBE_STEP_SECONDS", "value": "0.4"}]},
            "scheduling": {"topology": {"keys": [RACK]}},
            "restartPolicy": {"backoffBaseSeconds": 1, "backoffLimit": 3},
        },
    }


def activation_dump(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "interp.dev/v1alpha1", "kind": "ActivationDump",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"storage": {"claimName": "data", "subPath": "models/tiny-gpt2", "readOnly": True},
                      "dtype": "float32"},
            "dataset": {"source": {"claimName": "data", "subPath": "corpus", "readOnly": True}, "format": "jsonl"},
            "contextLength": 32, "batchSize": 8, "hookPoints": ["resid_post.1", "mlp_out.1"], "dtype": "bfloat16",
            "tokensPerShard": 1024, "shuffle": {"seed": 0},
            "output": {"claimName": "data", "subPath": f"activations/{name}"},
            "parallelism": 2,
            "worker": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        },
    }


def dump_store(kubectl: Kubectl, volume: Path) -> None:
    from interp_workloads.store import ActivationStore, StoreReader
    from interp_workloads.testing import write_corpus

    say("3. An ActivationDump: 2 pods store resid_post.1 and mlp_out.1 of the tiny GPT-2, shuffled, checksummed")
    write_corpus(volume / "corpus" / "part-0.jsonl", documents=400, min_words=5, max_words=80)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(activation_dump("tiny-acts")))

    def status() -> dict[str, Any]:
        got = kubectl("get", "actdump", "tiny-acts", "-n", NAMESPACE, "-o", "json").stdout
        return json.loads(got).get("status") or {}

    wait("the dump to finish", lambda: status().get("phase") in ("Succeeded", "Failed"), timeout=240)
    kubectl.show("get", "actdump", "-n", NAMESPACE, "-o", "wide")
    final = status()
    if final["phase"] != "Succeeded":
        raise RuntimeError(f"the dump ended {final['phase']}: {final.get('conditions')}")
    print(f"manifest {final['manifest']}: {json.dumps(final['summary'])}; {final['shardsDone']} shards, "
          f"{final['bytesWritten']} bytes")
    store = ActivationStore(volume / "activations" / "tiny-acts")
    store.verify()
    batch = next(iter(StoreReader(store, ["resid_post.1"], batch_size=256, shuffle_window=4096, seed=1)))
    stats = store.manifest.hook("resid_post.1").stats
    print(f"verified every shard's sha256; read a batch of {tuple(batch.activations['resid_post.1'].shape)} "
          f"{batch.activations['resid_post.1'].dtype} (mean norm {stats.mean_norm:.2f}, "
          f"resume position {batch.position.to_dict()})")


def wait(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def cluster(model: Path) -> None:
    from interp_operator.local.nodes import NodeConfig
    from interp_operator.local.plane import ControlPlane, PlaneConfig
    from interp_operator.local.testing import session_for

    say("2. The cluster: interp-local with four 1-GPU nodes in two racks")
    nodes = [NodeConfig(f"node-{rack}{i}", cpu="8", memory="32Gi", gpus=1, labels={RACK: f"rack-{rack}"})
             for rack in (1, 2) for i in "ab"]
    shutil.rmtree(WORK / "local", ignore_errors=True)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the pods' python
    with ControlPlane.in_thread(PlaneConfig(state_dir=WORK / "local", nodes=nodes, eviction_seconds=5)) as plane:
        kubeconfig = plane.write_kubeconfig(WORK / "kubeconfig")
        kubectl = Kubectl(kubeconfig)
        base, session = session_for(kubeconfig)
        kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kubectl.show("get", "nodes", "-L", RACK)
        kubectl("create", "namespace", NAMESPACE)
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                 "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
        kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(claim))
        volume = plane.state_dir / "volumes" / NAMESPACE / "data"
        shutil.copytree(model, volume / "models" / "tiny-gpt2")

        say("An invalid SAETrainingJob (k = dictSize) is refused at apply time by the CRD's CEL rule")
        bad = job("bad")
        bad["spec"]["saes"][0]["k"] = 256
        refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
        print(refused.stderr.strip())

        say("The operator runs a 2-pod SAETrainingJob as a torch.distributed gang, packed into one rack")
        log = (WORK / "operator.log").open("w")
        operator = subprocess.Popen(
            [sys.executable, "-P", "-m", "interp_operator.cli", "-A", "--metrics-port", "0", "--health-port", "0"],
            env=os.environ | {"KUBECONFIG": str(kubeconfig), "INTERP_LOG_FORMAT": "json",
                              "INTERP_WORKLOAD_MODULES": "SAETrainingJob=interp_workloads.probe"},
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump(job("tiny-saes")))
            checkpoint = volume / "saes" / "tiny-saes" / "probe-checkpoint.json"

            def status() -> dict[str, Any]:
                got = kubectl("get", "saejob", "tiny-saes", "-n", NAMESPACE, "-o", "json").stdout
                return json.loads(got).get("status") or {}

            wait("the gang to run and checkpoint", lambda: checkpoint.exists()
                 and json.loads(checkpoint.read_text())["step"] >= 3)
            placed = status()["placement"]
            print(f"placed in {placed['topologyKey']}={placed['domain']} on {placed['nodes']}; "
                  f"checkpoint: {checkpoint.read_text()}")
            kubectl.show("get", "pods", "-n", NAMESPACE, "-o", "wide")

            say("Fault: rank 1's process is killed; the whole gang restarts and resumes from the checkpoint")
            response = session.post(f"{base}/interp-local/v1/namespaces/{NAMESPACE}/pods/tiny-saes-1-1/kill",
                                    verify=session.verify, timeout=30)
            response.raise_for_status()
            wait("the job to succeed", lambda: status().get("phase") in ("Succeeded", "Failed"), timeout=180)
            final = status()
            print(f"phase {final['phase']}, restarts {final['restarts']}, attempt {final['attempt']}; "
                  f"checkpoint: {checkpoint.read_text()}")
            kubectl.show("get", "interp", "-n", NAMESPACE)
            kubectl.show("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=SAETrainingJob",
                         "--sort-by=.metadata.creationTimestamp",
                         "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
            if final["phase"] != "Succeeded":
                raise RuntimeError(f"the job ended {final['phase']}: see {WORK / 'operator.log'}")
            dump_store(kubectl, volume)
        finally:
            operator.terminate()
            operator.wait(30)


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    model = microscope()
    cluster(model)
    say(f"Done. Logs and state are in {WORK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
