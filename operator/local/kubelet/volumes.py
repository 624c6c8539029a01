"""Pod volumes as local directories: emptyDir, hostPath, PVC (a directory per claim), and configMap /
secret / downwardAPI / projected files that are rewritten when their source changes."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .env import EnvError, field_ref

Obj = dict[str, Any]


class VolumeError(Exception):
    """A volume cannot be set up yet (e.g. its claim does not exist); the pod waits in ContainerCreating."""


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _project(directory: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Make ``directory`` hold exactly ``files`` (relative path → content, mode), atomically per file."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, (data, mode) in files.items():
        target = directory / rel
        if not target.exists() or target.read_bytes() != data:
            _write_atomic(target, data, mode)
    wanted = {directory / rel for rel in files}
    for existing in list(directory.rglob("*")):
        if existing.is_file() and existing not in wanted:
            existing.unlink()


def _key_files(data: dict[str, bytes], items: list[Obj] | None, default_mode: int, optional: bool,
               what: str) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    out = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeError(f"{what}: key {item['key']!r} not found")
        out[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
    return out


class PodVolumes:
    def __init__(self, pod: Obj, pod_dir: Path, state_dir: Path, store_get: Any):
        self.pod = pod
        self.pod_dir = pod_dir
        self.state_dir = state_dir
        self.store_get = store_get
        self.dirs: dict[str, Path] = {}
        self.sources: set[tuple[str, str]] = set()  # ("configmaps"|"secrets", name) to watch

    def setup(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            self.dirs[volume["name"]] = self._setup_one(volume)

    def refresh(self, pod: Obj) -> None:
        """Rewrite the projected files (after a ConfigMap, Secret or the pod's own metadata changed)."""
        self.pod = pod
        for volume in pod["spec"].get("volumes") or []:
            if any(k in volume for k in ("configMap", "secret", "downwardAPI", "projected")):
                self._setup_one(volume)

    def _setup_one(self, volume: Obj) -> Path:
        name = volume["name"]
        local = self.pod_dir / "volumes" / name
        if "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
            return local
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            kind = volume["hostPath"].get("type", "")
            if kind in ("DirectoryOrCreate", "") and not path.exists() and kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            if kind == "Directory" and not path.is_dir():
                raise VolumeError(f"hostPath type check failed: {path} is not a directory")
            return path
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            namespace = self.pod["metadata"]["namespace"]
            if self.store_get("/persistentvolumeclaims", (namespace, claim)) is None:
                raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
            path = self.state_dir / "volumes" / namespace / claim
            path.mkdir(parents=True, exist_ok=True)
            return path
        files = self._projected_files(volume)
        _project(local, files)
        return local

    def _projected_files(self, volume: Obj) -> dict[str, tuple[bytes, int]]:
        namespace = self.pod["metadata"]["namespace"]
        if "configMap" in volume or "secret" in volume:
            return self._source_files(volume, namespace)
        if "downwardAPI" in volume:
            return self._downward_files(volume["downwardAPI"])
        if "projected" in volume:
            files: dict[str, tuple[bytes, int]] = {}
            mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"].get("sources") or []:
                if "configMap" in source or "secret" in source:
                    files.update(self._source_files({**source, "defaultMode": mode}, namespace))
                elif "downwardAPI" in source:
                    files.update(self._downward_files({**source["downwardAPI"], "defaultMode": mode}))
                elif "serviceAccountToken" in source:
                    files[source["serviceAccountToken"]["path"]] = (b"", mode)
            return files
        raise VolumeError(f"volume {volume['name']!r}: this volume type is not supported by interp-local")

    def _source_files(self, volume: Obj, namespace: str) -> dict[str, tuple[bytes, int]]:
        secret = "secret" in volume
        ref = volume["secret"] if secret else volume["configMap"]
        name = ref.get("secretName") if secret else ref.get("name")
        kind = "secrets" if secret else "configmaps"
        self.sources.add((kind, name))
        obj = self.store_get(f"/{kind}", (namespace, name))
        optional = bool(ref.get("optional"))
        if obj is None:
            if optional:
                return {}
            raise VolumeError(f'{kind[:-1]} "{name}" not found')
        if secret:
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        mode = ref.get("defaultMode", volume.get("defaultMode", 0o644))
        return _key_files(data, ref.get("items"), mode, optional, f"{kind[:-1]} {name}")

    def _downward_files(self, spec: Obj) -> dict[str, tuple[bytes, int]]:
        files = {}
        mode = spec.get("defaultMode", 0o644)
        for item in spec.get("items") or []:
            if "fieldRef" not in item:
                raise VolumeError("downwardAPI volumes support fieldRef items only in interp-local")
            try:
                value = field_ref(self.pod, item["fieldRef"]["fieldPath"])
            except EnvError as exc:
                raise VolumeError(str(exc)) from exc
            files[item["path"]] = (value.encode(), item.get("mode", mode))
        return files

    def mounts(self, container: Obj) -> dict[str, str]:
        """mountPath → local directory for one container."""
        out = {}
        for mount in container.get("volumeMounts") or []:
            base = self.dirs.get(mount["name"])
            if base is None:
                raise VolumeError(f"volumeMount {mount['name']!r} refers to an unknown volume")
            local = base / mount["subPath"] if mount.get("subPath") else base
            if mount.get("subPath") and not local.exists():  # as the kubelet does; a file is mounted as a file
                local.mkdir(parents=True, exist_ok=True)
            out[mount["mountPath"]] = str(local)
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)
