"""The SDK's client: the three kinds as Python objects, against any cluster or interp-local.

    from interp_operator.sdk import Client
    client = Client()                                   # kubeconfig ($KUBECONFIG, ~/.kube/config) or in-cluster
    job = client.create(dump)                           # an ActivationDump model, a dict, or YAML text
    status = job.wait()                                 # a progress bar; raises JobFailed with the reason
    store = job.results.open_store()

Objects going in are validated by the API models; objects coming back are handles (:class:`Job`,
:class:`InferenceService`) over the stored JSON with typed ``status`` and ``spec``.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ..api import KindInfo, Resource
from ..api.activationdump import ActivationDumpStatus
from ..api.inferenceservice import InterpInferenceServiceStatus
from ..api.saetrainingjob import SAETrainingJobStatus
from ..gang import naming
from . import forward
from .forward import PortForward
from .progress import StatusBar
from .resources import (
    JOB_KINDS,
    body_of,
    collection_path,
    load_objects,
    object_path,
    resolve_kind,
    to_resource,
)
from .results import Mounts, Results
from .status import JOB_DONE, SERVICE_DONE, JobFailed, failure
from .transport import MERGE_PATCH, ApiError, Connection, NotFound, Transport, connect

STATUS_MODELS: dict[str, type[Any]] = {
    "ActivationDump": ActivationDumpStatus,
    "SAETrainingJob": SAETrainingJobStatus,
    "InterpInferenceService": InterpInferenceServiceStatus,
}
SUSPENDED_REPLICAS = f"{naming.GROUP}/suspended-replicas"
"""A suspended service's replica count before it was scaled to zero (restored by resume)."""
WATCH_WINDOW_S = 60
CONTAINER = "workload"

ObjectInput = Resource | Mapping[str, Any] | str | Path


class WaitTimeout(TimeoutError):
    """``wait()`` ran out of time; ``status`` is the last one seen."""

    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """A connection to one cluster, with a default namespace."""

    def __init__(self, kubeconfig: str | Path | None = None, *, context: str | None = None,
                 namespace: str | None = None, in_cluster: bool | None = None, transport: Transport | None = None,
                 mounts: Mounts | Mapping[str, str] | str | None = None) -> None:
        self.transport = transport or connect(Connection(str(kubeconfig) if kubeconfig else None, context, in_cluster))
        self.namespace = namespace or self.transport.namespace
        self.mounts = mounts if isinstance(mounts, Mounts) else Mounts.parse(mounts)

    # -- creating ---------------------------------------------------------------------------------------------
    def create(self, obj: ObjectInput, *, namespace: str | None = None, dry_run: bool = False) -> Handle:
        """Create one object (a model, a dict, YAML text or a YAML file holding one document)."""
        objects = self._inputs(obj)
        if len(objects) != 1:
            raise ValueError(f"create takes one object, got {len(objects)}; use submit() for several")
        return self._create(objects[0], namespace, dry_run)

    def submit(self, source: ObjectInput, *, namespace: str | None = None, dry_run: bool = False) -> list[Handle]:
        """Create every object of a YAML stream (or one model); all are validated before the first is sent."""
        return [self._create(obj, namespace, dry_run) for obj in self._inputs(source)]

    def _inputs(self, source: ObjectInput) -> list[Resource]:
        if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).is_file()):
            return load_objects(Path(source))
        if isinstance(source, str):
            return load_objects(source)
        return [to_resource(source)]

    def _create(self, obj: Resource, namespace: str | None, dry_run: bool) -> Handle:
        info = resolve_kind(obj.kind)
        body = body_of(obj, namespace or self.namespace)
        params = {"dryRun": "All"} if dry_run else None
        stored = self.transport.request("POST", collection_path(info, body["metadata"]["namespace"]), body=body,
                                        params=params)
        return self._handle(stored)

    # -- reading ----------------------------------------------------------------------------------------------
    def get(self, kind: str, name: str, *, namespace: str | None = None) -> Handle:
        info = resolve_kind(kind)
        return self._handle(self.transport.request("GET", object_path(info, namespace or self.namespace, name)))

    def list(self, kind: str | None = None, *, namespace: str | None = None, all_namespaces: bool = False,
             label_selector: str | None = None) -> list[Handle]:
        """Objects of one kind (or all three), newest last, in a namespace or in all of them."""
        infos = [resolve_kind(kind)] if kind else [resolve_kind(k) for k in STATUS_MODELS]
        params = {"labelSelector": label_selector} if label_selector else None
        handles = []
        for info in infos:
            if all_namespaces:
                path = collection_path(info, "_").replace("/namespaces/_", "")
            else:
                path = collection_path(info, namespace or self.namespace)
            answer = self.transport.request("GET", path, params=params)
            for item in answer.get("items") or ():
                item.setdefault("kind", info.kind)
                item.setdefault("apiVersion", answer.get("apiVersion"))
                handles.append(self._handle(item))
        return sorted(handles, key=lambda h: (h.namespace, h.raw["metadata"].get("creationTimestamp") or "", h.name))

    def _handle(self, raw: dict[str, Any]) -> Handle:
        cls = Job if raw.get("kind") in JOB_KINDS else InferenceService
        return cls(self, raw)

    # -- changing ---------------------------------------------------------------------------------------------
    def update(self, obj: ObjectInput, *, namespace: str | None = None) -> Handle:
        """Replace an object's spec, labels and annotations with ``obj``'s (its stored status is kept)."""
        model = self._inputs(obj)
        if len(model) != 1:
            raise ValueError(f"update takes one object, got {len(model)}")
        info = resolve_kind(model[0].kind)
        body = body_of(model[0], namespace or self.namespace)
        meta = body["metadata"]
        current = self.transport.request("GET", object_path(info, meta["namespace"], meta["name"]))
        body["metadata"] = {**current["metadata"], "labels": meta.get("labels") or {},
                            "annotations": meta.get("annotations") or {}}
        updated = self.transport.request("PUT", object_path(info, meta["namespace"], meta["name"]), body=body)
        return self._handle(updated)

    def patch(self, kind: str, name: str, patch: Mapping[str, Any], *, namespace: str | None = None) -> Handle:
        """A JSON merge patch; the patched spec is validated by the models before it is sent."""
        info = resolve_kind(kind)
        path = object_path(info, namespace or self.namespace, name)
        if "spec" in patch:
            current = self.transport.request("GET", path)
            to_resource(_merge(current, dict(patch)))
        return self._handle(self.transport.request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH))

    def annotate(self, kind: str, name: str, annotations: Mapping[str, str | None], *,
                 namespace: str | None = None) -> Handle:
        """Set annotations (None removes one)."""
        return self.patch(kind, name, {"metadata": {"annotations": dict(annotations)}}, namespace=namespace)

    def delete(self, kind: str, name: str, *, namespace: str | None = None, missing_ok: bool = False) -> None:
        info = resolve_kind(kind)
        try:
            self.transport.request("DELETE", object_path(info, namespace or self.namespace, name),
                                   body={"propagationPolicy": "Background"})
        except NotFound:
            if not missing_ok:
                raise

    def suspend(self, kind: str, name: str, *, namespace: str | None = None) -> Handle:
        """Jobs: set spec.runPolicy.suspend (pods go, checkpoints stay). Services: scale to zero, remembering the
        replica count in an annotation for :meth:`resume`."""
        info = resolve_kind(kind)
        if info.kind in JOB_KINDS:
            return self.patch(info.kind, name, {"spec": {"runPolicy": {"suspend": True}}}, namespace=namespace)
        current = self.get(info.kind, name, namespace=namespace)
        replicas = current.raw["spec"].get("replicas", 1)
        if replicas == 0:
            return current
        return self.patch(info.kind, name, {"metadata": {"annotations": {SUSPENDED_REPLICAS: str(replicas)}},
                                            "spec": {"replicas": 0}}, namespace=namespace)

    def resume(self, kind: str, name: str, *, namespace: str | None = None) -> Handle:
        info = resolve_kind(kind)
        if info.kind in JOB_KINDS:
            return self.patch(info.kind, name, {"spec": {"runPolicy": {"suspend": False}}}, namespace=namespace)
        current = self.get(info.kind, name, namespace=namespace)
        remembered = (current.raw["metadata"].get("annotations") or {}).get(SUSPENDED_REPLICAS)
        if current.raw["spec"].get("replicas", 1) != 0:
            return current
        replicas = int(remembered) if remembered and remembered.isdigit() else 1
        return self.patch(info.kind, name, {"metadata": {"annotations": {SUSPENDED_REPLICAS: None}},
                                            "spec": {"replicas": replicas}}, namespace=namespace)

    # -- around the object ------------------------------------------------------------------------------------
    def watch(self, kind: str, name: str, *, namespace: str | None = None,
              timeout: float | None = None) -> Iterator[Handle]:
        """The object now and after every change, until ``timeout`` seconds pass (forever with None) or it is
        deleted. Reconnects after dropped connections and expired resource versions."""
        info = resolve_kind(kind)
        namespace = namespace or self.namespace
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.transport.request("GET", object_path(info, namespace, name))
        yield self._handle(current)
        version = current["metadata"].get("resourceVersion")
        while deadline is None or time.monotonic() < deadline:
            left = WATCH_WINDOW_S if deadline is None else int(deadline - time.monotonic())
            window = max(1, min(WATCH_WINDOW_S, left))
            params = {"watch": "true", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": window,
                      "allowWatchBookmarks": "true", "resourceVersion": version or ""}
            try:
                with self.transport.stream(collection_path(info, namespace), params=params,
                                           timeout=window + 10) as lines:
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        kind_of_event = event.get("type")
                        if kind_of_event == "ERROR":
                            raise _Expired(str(obj.get("message")))
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind_of_event == "DELETED":
                            return
                        if kind_of_event in ("ADDED", "MODIFIED"):
                            yield self._handle(obj)
            except (_Expired, OSError, ValueError, ApiError) as err:
                if isinstance(err, NotFound):
                    return
                # Start over from the current object: nothing between the last event and now is lost.
                try:
                    current = self.transport.request("GET", object_path(info, namespace, name))
                except NotFound:
                    return
                version = current["metadata"].get("resourceVersion")
                yield self._handle(current)

    def events(self, kind: str, name: str, *, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """The object's events, oldest first, as the API returns them (core/v1 Events)."""
        info = resolve_kind(kind)
        namespace = namespace or self.namespace
        selector = f"involvedObject.kind={info.kind},involvedObject.name={name}"
        answer = self.transport.request("GET", f"/api/v1/namespaces/{namespace}/events",
                                        params={"fieldSelector": selector})
        items = answer.get("items") or []
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or
                      (e.get("metadata") or {}).get("creationTimestamp") or "")

    def pods(self, kind: str, name: str, *, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """The object's pods (every attempt still present), by attempt then rank."""
        info = resolve_kind(kind)
        namespace = namespace or self.namespace
        selector = naming.label_selector(naming.selector_labels(info.kind, name))
        answer = self.transport.request("GET", f"/api/v1/namespaces/{namespace}/pods",
                                        params={"labelSelector": selector})
        return sorted(answer.get("items") or [], key=_pod_order)

    def logs(self, kind: str, name: str, *, rank: int = 0, follow: bool = False, attempt: int | None = None,
             previous: bool = False, tail_lines: int | None = None, namespace: str | None = None) -> Iterator[str]:
        """Log lines of one rank's pod (the current attempt unless ``attempt`` is given)."""
        namespace = namespace or self.namespace
        pod = self.rank_pod(kind, name, rank, attempt=attempt, namespace=namespace)
        params: dict[str, str | int | bool] = {"container": CONTAINER}
        if follow:
            params["follow"] = True
        if previous:
            params["previous"] = True
        if tail_lines is not None:
            params["tailLines"] = tail_lines
        with self.transport.stream(f"/api/v1/namespaces/{namespace}/pods/{pod}/log", params=params,
                                   timeout=None if follow else 60) as lines:
            for line in lines:
                yield line.decode(errors="replace")

    def port_forward(self, kind: str, name: str, port: int | None = None, *, local_port: int = 0, rank: int = 0,
                     namespace: str | None = None) -> PortForward:
        """Forward a local port to the object's pod: a ready server replica of a service (its spec.port unless
        ``port`` says otherwise), or rank ``rank`` of a job. Use as a context manager, or ``.start()``."""
        info = resolve_kind(kind)
        namespace = namespace or self.namespace
        if info.kind in JOB_KINDS:
            if port is None:
                raise ValueError(f"{info.kind}: give the pod port to forward")
            pod_name = self.rank_pod(info.kind, name, rank, namespace=namespace)
            pod = next(p for p in self.pods(info.kind, name, namespace=namespace) if p["metadata"]["name"] == pod_name)
        else:
            ready = [p for p in self.pods(info.kind, name, namespace=namespace) if _ready(p)]
            if not ready:
                raise LookupError(f"{info.kind} {name} has no ready server pod to forward to")
            pod = ready[0]
            if port is None:
                port = int(self.get(info.kind, name, namespace=namespace).raw["spec"].get("port", 8000))
        return forward.to_pod(self.transport.api_client, namespace, pod, port, local_port)

    def rank_pod(self, kind: str, name: str, rank: int, *, attempt: int | None = None,
                 namespace: str | None = None) -> str:
        pods = [p for p in self.pods(kind, name, namespace=namespace)
                if p["metadata"].get("labels", {}).get(naming.LABEL_RANK) == str(rank)]
        if attempt is not None:
            pods = [p for p in pods if p["metadata"]["labels"].get(naming.LABEL_ATTEMPT) == str(attempt)]
        if not pods:
            which = f" of attempt {attempt}" if attempt is not None else ""
            raise LookupError(f"{resolve_kind(kind).kind} {name} has no pod of rank {rank}{which} (yet)")
        return str(pods[-1]["metadata"]["name"])


class _Expired(Exception):
    """A watch's ERROR event (resource version too old, typically)."""


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_order(pod: Mapping[str, Any]) -> tuple[int, int]:
    labels = pod["metadata"].get("labels") or {}
    return int(labels.get(naming.LABEL_ATTEMPT, 0)), int(labels.get(naming.LABEL_RANK, 0))


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class Handle:
    """One object as last read: ``raw`` (the stored JSON), typed ``status``/``spec``/``obj``, and its operations."""

    done_phases: tuple[str, ...] = JOB_DONE

    def __init__(self, client: Client, raw: dict[str, Any]) -> None:
        self.client, self.raw = client, raw
        self.info: KindInfo = resolve_kind(raw["kind"])

    def __repr__(self) -> str:
        return f"<{self.kind} {self.namespace}/{self.name} phase={self.phase}>"

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def name(self) -> str:
        return str(self.raw["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.raw["metadata"].get("namespace") or self.client.namespace)

    @property
    def phase(self) -> str | None:
        return (self.raw.get("status") or {}).get("phase")

    @property
    def status(self) -> Any:
        """The typed status (``ActivationDumpStatus``, ``SAETrainingJobStatus``, ...), None before the first."""
        raw = self.raw.get("status")
        return STATUS_MODELS[self.kind].model_validate(raw) if raw else None

    @property
    def obj(self) -> Resource:
        """The whole object as its API model (raises InvalidObject for a spec the models refuse)."""
        return to_resource(self.raw)

    @property
    def spec(self) -> Any:
        return self.obj.spec  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return self.raw

    def refresh(self) -> Handle:
        self.raw = self.client.get(self.kind, self.name, namespace=self.namespace).raw
        return self

    def delete(self) -> None:
        self.client.delete(self.kind, self.name, namespace=self.namespace, missing_ok=True)

    def suspend(self) -> Handle:
        self.raw = self.client.suspend(self.kind, self.name, namespace=self.namespace).raw
        return self

    def resume(self) -> Handle:
        self.raw = self.client.resume(self.kind, self.name, namespace=self.namespace).raw
        return self

    def watch(self, timeout: float | None = None) -> Iterator[Handle]:
        for handle in self.client.watch(self.kind, self.name, namespace=self.namespace, timeout=timeout):
            self.raw = handle.raw
            yield self

    def events(self) -> builtins.list[dict[str, Any]]:
        return self.client.events(self.kind, self.name, namespace=self.namespace)

    def pods(self) -> builtins.list[dict[str, Any]]:
        return self.client.pods(self.kind, self.name, namespace=self.namespace)

    def logs(self, rank: int = 0, *, follow: bool = False, attempt: int | None = None, previous: bool = False,
             tail_lines: int | None = None) -> Iterator[str]:
        """Log lines of one rank (``follow=True`` streams until the pod's container ends)."""
        return self.client.logs(self.kind, self.name, rank=rank, follow=follow, attempt=attempt, previous=previous,
                                tail_lines=tail_lines, namespace=self.namespace)

    def wait(self, timeout: float | None = None, *, progress: bool | StatusBar = True,
             stream: TextIO | None = None, raise_on_failure: bool = True) -> Any:
        """Block until the object is done (jobs: Succeeded or Failed; services: Ready or Failed), drawing a
        progress bar from its status. Returns the final typed status; raises :class:`JobFailed` with the reason
        from the status condition when it failed, :class:`WaitTimeout` after ``timeout`` seconds."""
        bar = progress if isinstance(progress, StatusBar) else (
            StatusBar(f"{self.kind}/{self.name}", stream=stream) if progress else None)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for _ in self.watch(timeout=timeout):
                if bar is not None:
                    bar.update(self.status)
                if self.phase in self.done_phases:
                    break
            else:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"{self.kind} {self.name} is still {self.phase} after {timeout}s", self.status)
                raise LookupError(f"{self.kind} {self.name} was deleted while waiting (last phase {self.phase})")
        finally:
            if bar is not None:
                bar.close()
        status = self.status
        failed = failure(status)
        if failed is not None and raise_on_failure:
            raise JobFailed(self.kind, self.name, failed[0], failed[1], status)
        return status

    def profile(self, steps: str | int) -> Handle:
        """Ask the running pods for a torch.profiler trace of ``steps`` ("100-110", or one step); the traces land
        in the output's ``profiles/`` directory (``results.profiles()``)."""
        value = str(steps).strip()
        from interp_workloads.profiling import parse_steps  # pure; the workloads package imports no torch

        parse_steps(value)
        self.raw = self.client.annotate(self.kind, self.name, {naming.PROFILE_ANNOTATION: value},
                                        namespace=self.namespace).raw
        return self

    @property
    def results(self) -> Results:
        """The object's outputs: the store, SAEs, curves, traces (``Results``)."""
        return Results(self, self.client.mounts)


class Job(Handle):
    """An ActivationDump or an SAETrainingJob: runs to Succeeded or Failed."""


class InferenceService(Handle):
    """An InterpInferenceService: becomes Ready."""

    done_phases = SERVICE_DONE

    @property
    def url(self) -> str | None:
        return (self.raw.get("status") or {}).get("url")
