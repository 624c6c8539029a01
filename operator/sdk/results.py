"""An object's outputs from where this machine can read them: a PVC mounted here, or a copy out of a pod.

Where claims are mounted is given by a mapping (``Client(mounts=...)`` or ``$INTERP_MOUNTS``), one entry per claim:

    data=/mnt/interp-data                     # claim "data" in any namespace
    team-a/data=/mnt/team-a                   # claim "data" of namespace team-a (wins over the plain entry)
    *=/srv/volumes/{namespace}/{claim}        # every claim, by pattern

entries separated by commas (or a dict). interp-local keeps claim CLAIM of namespace NS in STATE/volumes/NS/CLAIM,
so ``*=STATE/volumes/{namespace}/{claim}`` maps all of them. A ``file://`` URI is read directly. An output that is
not mounted here is copied out of a pod with :meth:`Results.pull` (tar over exec, as ``kubectl cp`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..api.common import StorageRef
from ..gang.builders import STORAGE_ROOT

if TYPE_CHECKING:
    from .client import Handle

MOUNTS_ENV = "INTERP_MOUNTS"
PROFILES_DIR = "profiles"
CURVES_FILE = "metrics.jsonl"
CURVES_PNG = "training-curves.png"
SAE_WEIGHTS = "sae.safetensors"


class NotMounted(LookupError):
    """The storage is not reachable from this machine; the message says how to map it or copy it."""


@dataclass(frozen=True)
class Mounts:
    """Where PVCs are mounted on this machine: ``{"claim" | "namespace/claim" | "*": path template}``."""

    entries: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: Mapping[str, str] | str | None) -> Mounts:
        """From a dict, from ``"claim=/path,ns/claim=/path,*=/root/{namespace}/{claim}"``, or from $INTERP_MOUNTS."""
        if spec is None:
            spec = os.environ.get(MOUNTS_ENV, "")
        if isinstance(spec, Mapping):
            return cls(dict(spec))
        entries = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, path = item.partition("=")
            if not sep or not key.strip() or not path.strip():
                raise ValueError(f"{MOUNTS_ENV}: expected CLAIM=PATH, NAMESPACE/CLAIM=PATH or *=PATTERN, got {item!r}")
            entries[key.strip()] = path.strip()
        return cls(entries)

    def claim_root(self, namespace: str, claim: str) -> Path | None:
        for key in (f"{namespace}/{claim}", claim, "*"):
            if key in self.entries:
                return Path(self.entries[key].format(namespace=namespace, claim=claim)).expanduser()
        return None

    def resolve(self, storage: StorageRef, namespace: str) -> Path:
        """The local directory of ``storage``; :class:`NotMounted` when no entry covers it."""
        if storage.uri is not None:
            if storage.uri.startswith("file://"):
                return Path(storage.uri.removeprefix("file://"))
            raise NotMounted(f"{storage.uri}: object storage is not read by the SDK; copy it with your storage tools")
        assert storage.claim_name is not None
        root = self.claim_root(namespace, storage.claim_name)
        if root is None:
            raise NotMounted(
                f"PVC {namespace}/{storage.claim_name} is not mounted here: map it with Client(mounts="
                f"{{'{storage.claim_name}': '/local/path'}}) or {MOUNTS_ENV}={storage.claim_name}=/local/path, "
                f"or copy the output with results.pull(DIR) / interpctl results pull")
        return root / storage.sub_path if storage.sub_path else root


def safe_extract(archive: tarfile.TarFile, destination: Path) -> list[str]:
    """Extract regular files and directories only, each inside ``destination`` (a hostile archive cannot write
    elsewhere, link, or create devices); returns the extracted names."""
    destination = destination.resolve()
    names = []
    for member in archive.getmembers():
        target = (destination / member.name).resolve()
        if target != destination and destination not in target.parents:
            raise ValueError(f"refusing archive entry outside the destination: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing archive entry that is neither a file nor a directory: {member.name!r}")
    archive.extractall(destination, filter="data")
    for member in archive.getmembers():
        if member.isfile():
            names.append(str(PurePosixPath(member.name)))
    return names


def exec_tar(api_client: Any, namespace: str, pod: str, container: str, remote_dir: str,
             chunks_to: Any) -> None:
    """Stream ``tar cf - -C remote_dir .`` out of a running container into the file object ``chunks_to``."""
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(api_client)
    response = stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container,
                      command=["tar", "cf", "-", "-C", remote_dir, "."], stderr=True, stdin=False, stdout=True,
                      tty=False, binary=True, _preload_content=False)
    errors = b""
    try:
        while response.is_open():
            response.update(timeout=1)
            if response.peek_stdout():
                chunks_to.write(response.read_stdout())
            if response.peek_stderr():
                errors += response.read_stderr()
    finally:
        response.close()
    code = response.returncode
    if code not in (0, None):
        raise RuntimeError(f"tar in pod {namespace}/{pod} exited with {code}: {errors.decode(errors='replace')}")


class Results:
    """The outputs of one object: an ActivationDump's store, an SAETrainingJob's SAEs, curves and traces."""

    def __init__(self, handle: Handle, mounts: Mounts) -> None:
        self.handle, self.mounts = handle, mounts

    # -- where ------------------------------------------------------------------------------------------------
    @property
    def output(self) -> StorageRef:
        spec = self.handle.raw.get("spec") or {}
        if "output" not in spec:
            raise LookupError(f"{self.handle.kind} {self.handle.name} has no spec.output")
        return StorageRef.model_validate(spec["output"])

    def local_path(self, storage: StorageRef | None = None) -> Path:
        """The output directory (or ``storage``) on this machine; :class:`NotMounted` when it is not mounted."""
        return self.mounts.resolve(storage or self.output, self.handle.namespace)

    def store_path(self) -> Path:
        """The activation store: a dump's output, or the store of the dump a training job reads."""
        if self.handle.kind == "ActivationDump":
            return self.local_path()
        if self.handle.kind == "SAETrainingJob":
            source = ((self.handle.raw["spec"].get("data") or {}).get("activationDump") or {}).get("name")
            if not source:
                raise LookupError(f"SAETrainingJob {self.handle.name} extracts on the fly: it has no store")
            dump = self.handle.client.get("ActivationDump", source, namespace=self.handle.namespace)
            return dump.results.local_path()
        raise LookupError(f"{self.handle.kind} has no activation store")

    # -- the activation store ---------------------------------------------------------------------------------
    def manifest(self) -> Any:
        """The store's manifest (``interp_workloads.store.StoreManifest``; needs no torch)."""
        from interp_workloads.store import load_manifest

        return load_manifest(self.store_path())

    def open_store(self, *, verify: bool = False) -> Any:
        """The store as an ``ActivationStore`` (needs torch); ``verify=True`` checks every shard's checksum."""
        from interp_workloads.store import ActivationStore

        store = ActivationStore(self.store_path())
        if verify:
            store.verify()
        return store

    def reader(self, hooks: str | Iterable[str], batch_size: int, **options: Any) -> Any:
        """A ``StoreReader`` over the store (the training reader; ``options`` as StoreReader takes them)."""
        from interp_workloads.store import StoreReader

        hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        return StoreReader(self.open_store(), hooks, batch_size, **options)

    # -- trained SAEs -----------------------------------------------------------------------------------------
    def sae_names(self) -> list[str]:
        return [sae["name"] for sae in (self.handle.raw.get("spec") or {}).get("saes") or ()]

    def sae_path(self, name: str) -> Path:
        if name not in self.sae_names():
            raise KeyError(f"{self.handle.kind} {self.handle.name} has no SAE {name!r}; it has {self.sae_names()}")
        return self.local_path() / name

    def load_sae(self, name: str, device: str = "cpu") -> Any:
        """A trained SAE as the project's ``SparseCoder`` (``interp_workloads.sae.load_sae``; needs torch): it
        encodes and decodes raw activations of its hook point."""
        try:
            from interp_workloads.sae import load_sae
        except ImportError as err:
            raise RuntimeError(f"loading SAEs needs torch and interp_workloads.sae ({err}); install "
                               "interp-operator[workloads]") from None
        return load_sae(self.sae_path(name), device=device)

    def load_sae_lens(self, name: str, device: str = "cpu") -> Any:
        """The SAE as a SAELens ``SAE`` (the export is in the format SAELens loads); needs sae-lens installed."""
        try:
            from sae_lens import SAE
        except ImportError:
            raise RuntimeError("load_sae_lens needs sae-lens: pip install sae-lens") from None
        return SAE.load_from_disk(str(self.sae_path(name)), device=device)

    # -- curves and traces ------------------------------------------------------------------------------------
    def training_curves(self) -> dict[str, dict[str, list[Any]]]:
        """The trainer's metrics log as columns per SAE: ``{"<sae>": {"step": [...], "tokens": [...], "fvu": [...],
        "l0": [...], ...}}``, in log order (the log holds one record per SAE per interval). A value a record lacks
        is None."""
        path = self.local_path() / CURVES_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: no training metrics (yet)")
        by_sae: dict[str, list[dict[str, Any]]] = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}:{number}: not a JSON record ({err})") from None
            if not isinstance(record, dict) or not isinstance(record.get("sae"), str):
                raise ValueError(f"{path}:{number}: a metrics record needs a string field 'sae'")
            by_sae.setdefault(record.pop("sae"), []).append(record)
        curves = {}
        for sae, records in by_sae.items():
            keys: dict[str, None] = {}
            for record in records:
                keys.update(dict.fromkeys(record))
            curves[sae] = {key: [record.get(key) for record in records] for key in keys}
        return curves

    def training_curves_png(self) -> Path:
        """The PNG of the training curves the trainer writes with its outputs."""
        path = self.local_path() / CURVES_PNG
        if not path.exists():
            raise FileNotFoundError(f"{path}: no training-curve plot (yet)")
        return path

    def profiles(self) -> list[Path]:
        """Chrome traces written on request (``handle.profile(steps)``), oldest first."""
        directory = self.local_path() / PROFILES_DIR
        if not directory.is_dir():
            return []
        return sorted(directory.glob("profile-*.json"), key=lambda p: (p.stat().st_mtime, p.name))

    # -- copying ----------------------------------------------------------------------------------------------
    def pull(self, destination: str | Path, *, pod: str | None = None) -> list[str]:
        """Copy the output directory to ``destination``: from the local mount when there is one, else out of a
        running pod that mounts it (tar over exec). Returns the copied files, relative to ``destination``."""
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        try:
            source = self.local_path()
        except NotMounted:
            return self._pull_from_pod(destination, pod)
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: the output directory does not exist (yet)")
        copied = []
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.is_symlink():
                relative = path.relative_to(source)
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied.append(relative.as_posix())
        return copied

    def _pull_from_pod(self, destination: Path, pod: str | None) -> list[str]:
        handle = self.handle
        if pod is None:
            running = [p for p in handle.pods() if (p.get("status") or {}).get("phase") == "Running"]
            if not running:
                raise NotMounted(f"{handle.kind} {handle.name}: its output is not mounted here and none of its pods "
                                 f"is running to copy it from; mount the claim (see Mounts) or pass pod=NAME of a "
                                 f"running pod that mounts it at {STORAGE_ROOT}/output")
            pod = running[0]["metadata"]["name"]
        with tempfile.TemporaryFile() as buffer:
            exec_tar(handle.client.transport.api_client, handle.namespace, pod, "workload",
                     f"{STORAGE_ROOT}/output", buffer)
            buffer.seek(0)
            with tarfile.open(fileobj=buffer, mode="r:") as archive:
                return safe_extract(archive, destination)

