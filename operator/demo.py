"""`make demo`: from nothing to a steered model through the three resources, on this machine, with nothing faked.

It starts interp-local (an embedded control plane whose kubelet runs pods as local processes) with four 1-GPU nodes
in two racks, installs the CRDs, starts the operator, and applies examples/quickstart/ in order:

1. an ActivationDump of a 4-layer GPT-2 trained by this repo (``interp_workloads.tiny_lm``) over the corpus it was
   trained on, by two extraction pods;
2. an SAETrainingJob that trains two SAEs from that store on a 2-pod torch.distributed gang; one worker is killed
   half-way, and the gang restarts and resumes from its checkpoint;
3. an InterpInferenceService serving the model with the trained SAE and a steering vector, then the same prompts
   generated plainly, steered, and with one SAE feature clamped, side by side.

While it runs, it prints each object's changes the way ``kubectl get interp -w`` would. It exits non-zero when a
step fails, and stops every process it started on exit, on Ctrl-C and on SIGTERM.

    python -m interp_operator.demo [--work DIR] [--stay]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
NAMESPACE = "quickstart"
CLAIM = "data"
RACK = "topology.kubernetes.io/rack"
DUMP, TRAIN, SERVICE = "tiny-lm-resid", "tiny-lm-saes", "tiny-lm"
HOOK = "resid_post.1"
SAE = "l1-topk-512"
VECTOR = "toward-space"
PROMPTS = ("The dog", "The cook", "The rain")
STEERING_SCALE = 2.0
TIMEOUTS = {"dump": 300, "train": 420, "serve": 240}


class DemoFailed(RuntimeError):
    """A step did not end as it must; the message says which and where its logs are."""


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def kubectl_binary() -> str:
    return str(Path(sys.executable).parent / "kubectl")


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.base = [kubectl_binary(), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}"]

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode:
            raise DemoFailed(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def show(self, *args: str) -> None:
        print(f"$ kubectl {' '.join(args)}\n{self(*args).stdout.rstrip()}", flush=True)


class Watch:
    """Prints a row whenever an object's phase, whole percent, restarts or ready replicas change, like
    ``kubectl get interp -w`` (which kubectl itself only does for one kind at a time)."""

    COLUMNS = ("NAME", "PHASE", "PROGRESS", "RESTARTS", "AGE")

    def __init__(self, client: Any, interval: float = 1.0) -> None:
        self.client, self.interval = client, interval
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-watch", daemon=True)

    def __enter__(self) -> Watch:
        print("  " + "".join(f"{c:<34}" if c == "NAME" else f"{c:<14}" for c in self.COLUMNS), flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as err:  # a failed poll is reported and retried; the steps themselves fail loudly
                print(f"  (watch: {type(err).__name__}: {err})", flush=True)

    def poll(self) -> None:
        from .sdk.cli import row

        for handle in self.client.list():
            status = handle.raw.get("status") or {}
            progress = status.get("progress") or {}
            key = (status.get("phase"), int(progress.get("percent", 0)), status.get("restarts", 0),
                   status.get("readyReplicas"))
            name = f"{handle.kind}/{handle.name}"
            if self._seen.get(name) == key:
                continue
            self._seen[name] = key
            cells = row(handle, wide_namespace=False)
            print("  " + "".join(f"{cells[c]:<34}" if c == "NAME" else f"{cells[c]:<14}" for c in self.COLUMNS),
                  flush=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.plane: Any = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.token = secrets.token_urlsafe(24)
        self.outputs: dict[str, str] = {}

    # -- the cluster ------------------------------------------------------------------------------------------
    @contextmanager
    def cluster(self) -> Iterator[None]:
        from .local.nodes import NodeConfig
        from .local.plane import ControlPlane, PlaneConfig
        from .sdk import Client

        say("The cluster: interp-local with four 1-GPU nodes in two racks")
        nodes = [NodeConfig(f"gpu-{rack}{i}", cpu="8", memory="32Gi", gpus=1, labels={RACK: f"rack-{rack}"})
                 for rack in (1, 2) for i in "ab"]
        shutil.rmtree(self.work / "local", ignore_errors=True)
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the pods' python
        with ControlPlane.in_thread(PlaneConfig(state_dir=self.work / "local", nodes=nodes,
                                                eviction_seconds=5)) as plane:
            self.plane = plane
            self.kubeconfig = plane.write_kubeconfig(self.work / "kubeconfig")
            self.kubectl = Kubectl(self.kubeconfig, self.work / "kubectl-cache")
            self.volume = plane.state_dir / "volumes" / NAMESPACE / CLAIM
            self.mounts = f"*={plane.state_dir}/volumes/{{namespace}}/{{claim}}"
            self.client = Client(self.kubeconfig, namespace=NAMESPACE, mounts=self.mounts)
            try:
                self.install()
                yield
            finally:
                self.stop_operator()

    def install(self) -> None:
        kubectl = self.kubectl
        kubectl.show("get", "nodes", "-L", RACK, "-L", "nvidia.com/gpu.product")
        # Server-side apply of the CRDs, as the Helm chart's CRD templates are applied (no last-applied annotation).
        kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kubectl.show("get", "crd")
        log_path = self.work / "operator.log"
        print(f"starting the operator (log: {log_path})", flush=True)
        self.operator = subprocess.Popen(
            [sys.executable, "-P", "-m", "interp_operator.cli", "-A", "--metrics-port", "0", "--health-port", "0"],
            env=os.environ | {"KUBECONFIG": str(self.kubeconfig), "INTERP_LOG_FORMAT": "json"},
            stdout=log_path.open("w"), stderr=subprocess.STDOUT)

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.terminate()
            try:
                self.operator.wait(30)
            except subprocess.TimeoutExpired:
                self.operator.kill()
                self.operator.wait(10)
        self.operator = None

    def apply(self, name: str) -> None:
        path = QUICKSTART / name
        print(f"$ kubectl apply -f {path.relative_to(REPO)}", flush=True)
        print(self.kubectl("apply", "-f", str(path)).stdout.rstrip(), flush=True)

    def check_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is not None:
            raise DemoFailed(f"the operator exited with {self.operator.returncode}; see {self.work / 'operator.log'}")

    def wait(self, kind: str, name: str, timeout: float) -> Any:
        from .sdk import JobFailed, WaitTimeout

        handle = self.client.get(kind, name)
        try:
            return handle.wait(timeout=timeout, progress=False)
        except JobFailed as err:
            raise DemoFailed(f"{err}\n  see: kubectl describe {kind} {name}; {self.work / 'operator.log'}") from None
        except WaitTimeout as err:
            self.check_operator()
            raise DemoFailed(f"{err}; see {self.work / 'operator.log'}") from None

    # -- the steps --------------------------------------------------------------------------------------------
    def storage(self) -> None:
        say("The volume: the quickstart's namespace and claim; the model and corpus copied onto it")
        self.apply("00-storage.yaml")
        shutil.copytree(QUICKSTART / "model", self.volume / "models" / "tiny-lm")
        (self.volume / "corpus").mkdir(parents=True, exist_ok=True)
        shutil.copy2(QUICKSTART / "corpus.jsonl", self.volume / "corpus" / "corpus.jsonl")
        print(f"claim {NAMESPACE}/{CLAIM} is the directory {self.volume} (interp-local's volumes are directories)")
        job = (QUICKSTART / "02-saetrainingjob.yaml").read_text()
        bad = job.replace("dictSize: 512, k: 8", "dictSize: 512, k: 512")
        refused = self.kubectl("apply", "--dry-run=server", "-f", "-", stdin=bad, check=False)
        print("an SAETrainingJob with k = dictSize is refused at apply time by the CRD's validation:\n  "
              + refused.stderr.strip().replace("\n", "\n  "))
        if refused.returncode == 0:
            raise DemoFailed("the API server accepted an SAETrainingJob with k = dictSize")

    def dump(self) -> None:
        say("1. ActivationDump: two pods record resid_post.1 of the tiny model over the corpus")
        self.apply("01-activationdump.yaml")
        with Watch(self.client):
            status = self.wait("actdump", DUMP, TIMEOUTS["dump"])
        job = self.client.get("actdump", DUMP)
        store = job.results.open_store(verify=True)
        batch = next(iter(job.results.reader(HOOK, batch_size=512)))
        print(f"store {job.results.store_path()}: {store.tokens:,} tokens in {status.shards_done} shards, every "
              f"sha256 verified; a batch read back with the training reader: "
              f"{tuple(batch.activations[HOOK].shape)} {batch.activations[HOOK].dtype}")
        self.outputs["activation store"] = str(job.results.store_path())

    def train(self) -> None:
        say("2. SAETrainingJob: two SAEs on a 2-pod gang; one worker is killed half-way")
        self.apply("02-saetrainingjob.yaml")
        with Watch(self.client):
            job = self.client.get("saejob", TRAIN)

            def half_way_with_a_checkpoint() -> bool:
                self.check_operator()
                status = job.refresh().status
                if status is None:
                    return False
                if status.phase in ("Failed", "Succeeded"):
                    raise DemoFailed(f"the job ended {status.phase} before the fault could be injected")
                return (status.progress is not None and status.progress.percent >= 45
                        and status.last_checkpoint is not None)

            wait_for("the gang to pass half-way with a checkpoint", half_way_with_a_checkpoint, TIMEOUTS["train"])
            status = job.status
            victim = self.client.rank_pod("saejob", TRAIN, rank=1)
            print(f"  >>> at {status.progress.percent:.0f}% (checkpoint at step {status.last_checkpoint.step}): "
                  f"killing pod {victim} (rank 1)", flush=True)
            self.kill(victim)
            final = self.wait("saejob", TRAIN, TIMEOUTS["train"])
        from .sdk.status import describe

        print(describe("SAETrainingJob", TRAIN, final))
        if final.restarts < 1:
            raise DemoFailed("the gang finished without the restart the fault must cause")
        resumed = [line for line in job.logs(rank=0) if "resumed" in line]
        if not resumed:
            raise DemoFailed(f"rank 0 of attempt {final.attempt} logged no resume from a checkpoint")
        print(f"rank 0 of attempt {final.attempt}: {resumed[0].strip()}")
        self.kubectl.show("get", "events", "-n", NAMESPACE, "--field-selector",
                          f"involvedObject.kind=SAETrainingJob,involvedObject.name={TRAIN}",
                          "--sort-by=.metadata.creationTimestamp", "-o",
                          "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
        results = job.results
        curves = results.training_curves()
        for sae, columns in curves.items():
            fvu = [v for v in columns.get("fvu", []) if v is not None]
            if fvu:
                print(f"{sae}: FVU {fvu[0]:.3f} -> {fvu[-1]:.3f} over {columns['tokens'][-1]:,} tokens "
                      f"(metrics.jsonl, {len(fvu)} records)")
        for name in results.sae_names():
            self.outputs[f"SAE {name}"] = str(results.sae_path(name))
        self.outputs["training curves"] = str(results.training_curves_png())
        traces = results.profiles()
        self.outputs["profiler traces"] = (", ".join(str(p) for p in traces) if traces else
                                           "none: the pods did not see the interp.dev/profile-steps annotation")

    def kill(self, pod: str) -> None:
        from .local.client import session_for

        base, session = session_for(self.kubeconfig)
        response = session.post(f"{base}/interp-local/v1/namespaces/{NAMESPACE}/pods/{pod}/kill",
                                verify=session.verify, timeout=30)
        response.raise_for_status()

    def steering_vector(self) -> None:
        """The mean resid_post.1 of the corpus's "space" documents minus that of the others, computed from the
        model on the volume with the instrumentation core, saved where the service spec expects it."""
        import torch
        from safetensors.torch import save_file

        from interp_workloads.instrument import capture
        from interp_workloads.models import load_model
        from interp_workloads.spec import ModelSpec

        lm = load_model(ModelSpec(model=str(self.volume / "models" / "tiny-lm")))
        documents = [json.loads(line) for line in (QUICKSTART / "corpus.jsonl").read_text().splitlines()[:400]]
        sums: dict[bool, list[torch.Tensor]] = {True: [], False: []}
        for start in range(0, len(documents), 32):
            chunk = documents[start:start + 32]
            batch = lm.tokenize([d["text"] for d in chunk], max_length=64)
            with torch.no_grad():
                acts = capture(lm.model, batch, [HOOK])[HOOK]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            means = (acts * mask).sum(1) / mask.sum(1)
            for doc, mean in zip(chunk, means, strict=True):
                sums[doc["topic"] == "space"].append(mean)
        vector = torch.stack(sums[True]).mean(0) - torch.stack(sums[False]).mean(0)
        path = self.volume / "vectors" / f"{VECTOR}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"vector": vector.contiguous()}, str(path))
        print(f"steering vector {VECTOR!r}: mean {HOOK} of 'space' documents minus the others' "
              f"(norm {vector.norm():.2f}), saved to {path}")
        self.outputs["steering vector"] = str(path)

    def serve(self) -> None:
        say("3. InterpInferenceService: the model with the trained SAE and the steering vector")
        self.steering_vector()
        self.kubectl("create", "secret", "generic", "quickstart-tokens", "-n", NAMESPACE,
                     f"--from-literal=tokens={self.token}")
        self.apply("03-interpinferenceservice.yaml")
        with Watch(self.client):
            self.wait("iis", SERVICE, TIMEOUTS["serve"])
        from .sdk.inference import InferenceClient

        with InferenceClient.for_service(self.client, SERVICE, token=self.token) as api:
            api.wait_ready(timeout=120)
            feature, value = self.space_feature(api)
            variants: dict[str, list[dict[str, Any]]] = {
                "plain": [],
                f"steered ({VECTOR} x{STEERING_SCALE:g})": [{"kind": "vector", "name": VECTOR,
                                                             "scale": STEERING_SCALE}],
                f"SAE feature {feature} clamped to {value:.1f}": [{
                    "kind": "sae", "hook": HOOK, "sae": SAE,
                    "edits": [{"feature": feature, "op": "clamp", "value": value}]}],
            }
            rows = {}
            for label, interventions in variants.items():
                answer = api.generate(list(PROMPTS), interventions=interventions, max_new_tokens=24, seed=0)
                rows[label] = [generation.text for generation in answer.generations]
        print(f"greedy generations through the service's API ({'/'.join(PROMPTS)}):")
        for index, prompt in enumerate(PROMPTS):
            print(f"\n  prompt {prompt!r}")
            for label, texts in rows.items():
                print(f"    {label:<34} {prompt}{texts[index]!s}".rstrip())
        if all(rows[label] == rows["plain"] for label in rows):
            raise DemoFailed("neither the steering vector nor the feature clamp changed any generation")

    def space_feature(self, api: Any) -> tuple[int, float]:
        """The trained SAE's latent most specific to the "space" topic, from activations the service captures,
        and a clamp value of twice its largest activation there."""
        import torch

        sae = self.client.get("saejob", TRAIN).results.load_sae(SAE)
        documents = [json.loads(line) for line in (QUICKSTART / "corpus.jsonl").read_text().splitlines()[:64]]
        # The first sentence of each document: short prompts, well inside the model's 64 positions.
        captured = api.capture([d["text"].split(". ")[0] + "." for d in documents], [HOOK])
        mask = captured["attention_mask"].bool()
        with torch.no_grad():
            latents = sae.encode(captured[HOOK][mask].float())
        is_space = torch.tensor([d["topic"] == "space" for d in documents])
        space = is_space.unsqueeze(1).expand_as(mask)[mask]  # row-major, as the masked activations are
        specificity = latents[space].mean(0) - latents[~space].mean(0)
        feature = int(specificity.argmax())
        value = 2 * float(latents[space][:, feature].max())
        print(f"SAE {SAE}: latent {feature} fires on 'space' tokens (mean {latents[space][:, feature].mean():.2f}) "
              f"and hardly elsewhere (mean {latents[~space][:, feature].mean():.2f})")
        return feature, value

    # -- the end ----------------------------------------------------------------------------------------------
    def summary(self, started: float) -> None:
        say(f"Done in {time.monotonic() - started:.0f}s. Outputs (on the claim {NAMESPACE}/{CLAIM}, a directory here):")
        for label, where in self.outputs.items():
            print(f"  {label:<18} {where}")
        bin_dir = Path(sys.executable).parent
        env = f"KUBECONFIG={self.kubeconfig} INTERP_MOUNTS='{self.mounts}'"
        print(f"\nWhile the cluster runs (make demo DEMO_ARGS=--stay keeps it up), look at everything with:\n"
              f"  export {env}\n"
              f"  {bin_dir / 'kubectl'} get interp -n {NAMESPACE}\n"
              f"  {bin_dir / 'kubectl'} describe saejob {TRAIN} -n {NAMESPACE}\n"
              f"  {bin_dir / 'interpctl'} -n {NAMESPACE} status saejob/{TRAIN}\n"
              f"  {bin_dir / 'interpctl'} -n {NAMESPACE} logs saejob/{TRAIN} --rank 1\n"
              f"  {bin_dir / 'interpctl'} -n {NAMESPACE} events saejob/{TRAIN}\n"
              f"  {bin_dir / 'interpctl'} -n {NAMESPACE} results pull saejob/{TRAIN} ./saes\n"
              f"  {bin_dir / 'interpctl'} -n {NAMESPACE} port-forward iis/{SERVICE} 8000\n"
              f"The operator's log: {self.work / 'operator.log'}; the pods' logs: {self.work / 'local'}")
        self.kubectl.show("get", "interp", "-n", NAMESPACE)

    def run(self, stay: bool) -> None:
        started = time.monotonic()
        with self.cluster():
            self.storage()
            self.dump()
            self.train()
            self.serve()
            self.summary(started)
            if stay:
                print("\nThe cluster stays up until Ctrl-C.", flush=True)
                while True:
                    self.check_operator()
                    time.sleep(1)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_operator.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("INTERP_DEMO_DIR", REPO / ".cache" / "demo")),
                        help="state, logs and outputs (default .cache/demo)")
    parser.add_argument("--stay", action="store_true", help="keep the cluster running at the end until Ctrl-C")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    demo = Demo(args.work.resolve())
    try:
        demo.run(args.stay)
    except KeyboardInterrupt:
        print("\nmake demo: interrupted; the operator and every pod were stopped", file=sys.stderr)
        return 130
    except Exception as err:
        print(f"\nmake demo FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
