"""The store's files: atomic writes, checksums, and a memory-mapped read-only view of one safetensors file.

Safetensors is written here rather than by ``safetensors.torch.save_file`` so that every tensor's bytes stream
straight from the tensor into the file and the sha256 is computed on the way (no second read, no full-file copy).
Files are written under a temporary name in the same directory, fsynced and renamed: a reader (or a resumed dump)
sees a file complete or not at all. Hosts are little-endian, as safetensors' byte order is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from pydantic import BaseModel

from .common import FileEntry, StoreError, checked_path

__all__ = [
    "FileEntry",
    "ShardFile",
    "StoreError",
    "sha256_file",
    "verify_file",
    "write_json_atomic",
    "write_safetensors_atomic",
]

# safetensors dtype name -> torch dtype, and the numpy dtype its bytes are read as (bf16 has none: its int16 bits).
_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "F64": (torch.float64, np.dtype(np.float64)),
    "F32": (torch.float32, np.dtype(np.float32)),
    "F16": (torch.float16, np.dtype(np.float16)),
    "BF16": (torch.bfloat16, np.dtype(np.int16)),
    "I64": (torch.int64, np.dtype(np.int64)),
    "I32": (torch.int32, np.dtype(np.int32)),
    "I16": (torch.int16, np.dtype(np.int16)),
    "I8": (torch.int8, np.dtype(np.int8)),
    "U8": (torch.uint8, np.dtype(np.uint8)),
    "BOOL": (torch.bool, np.dtype(np.bool_)),
}
_SAFETENSORS_NAME = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}
# safetensors refuses larger headers; so does this reader, before it allocates anything for one.
_MAX_HEADER = 100 << 20


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """A file object writing ``.<name>.tmp-<pid>``; on a clean exit it is fsynced and renamed to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in memory order, without a copy when it is already a contiguous CPU tensor."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy().reshape(-1).view(np.uint8).data


def write_safetensors_atomic(
    root: Path, relpath: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> FileEntry:
    """Write ``tensors`` (in mapping order) as safetensors at ``root/relpath``, atomically; returns its FileEntry."""
    entry_path = checked_path(relpath)
    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError(f"{relpath}: safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, tensor in tensors.items():
        if name == "__metadata__" or tensor.dtype not in _SAFETENSORS_NAME:
            raise TypeError(f"{relpath}: cannot store tensor {name!r} of dtype {tensor.dtype}")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _SAFETENSORS_NAME[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    digest = hashlib.sha256()
    head: list[bytes | memoryview] = [struct.pack("<Q", len(text)), text]
    with _atomic(Path(root) / entry_path) as file:
        for chunk in chain(head, (_tensor_bytes(t) for t in tensors.values())):
            file.write(chunk)
            digest.update(chunk)
    return FileEntry(path=entry_path, bytes=8 + len(text) + offset, sha256=digest.hexdigest())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` (a pydantic model or a JSON value) as indented JSON at ``path``, atomically."""
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    with _atomic(Path(path)) as file:
        file.write((json.dumps(payload, indent=2) + "\n").encode())


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            digest.update(buffer[:read])
    return digest.hexdigest()


def verify_file(root: Path, entry: FileEntry) -> None:
    """StoreError unless ``root/entry.path`` exists with the recorded size and sha256."""
    path = Path(root) / entry.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except OSError as err:
        raise StoreError(f"{path}: cannot stat: {err}") from err
    if size != entry.bytes:
        raise StoreError(f"{path}: {size} bytes, expected {entry.bytes}")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise StoreError(f"{path}: sha256 {digest} does not match the recorded {entry.sha256} (the file is corrupt)")


@dataclass(frozen=True)
class _TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    """Byte offset in the file."""


class ShardFile:
    """A read-only memory-mapped view of one safetensors file: reads copy only the rows asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError as err:
            raise StoreError(f"{self.path}: cannot open: {err}") from err
        if size < 8:
            raise self._invalid(f"{size} bytes, shorter than the 8-byte header length")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        (header_length,) = struct.unpack("<Q", self._map[:8].tobytes())
        if header_length > min(_MAX_HEADER, size - 8):
            raise self._invalid(f"header length {header_length} does not fit in the file ({size} bytes)")
        try:
            header = json.loads(self._map[8 : 8 + header_length].tobytes())
        except ValueError as err:
            raise self._invalid(f"header is not JSON: {err}") from err
        if not isinstance(header, dict):
            raise self._invalid("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._invalid("__metadata__ is not a map of strings")
        self.metadata: dict[str, str] = metadata
        data_start, data_length = 8 + header_length, size - 8 - header_length
        self._tensors = {name: self._tensor_info(name, info, data_start, data_length) for name, info in header.items()}
        self._arrays: dict[str, np.ndarray] = {}

    def _invalid(self, problem: str) -> StoreError:
        return StoreError(f"{self.path}: not a valid safetensors file: {problem}")

    def _tensor_info(self, name: str, info: Any, data_start: int, data_length: int) -> _TensorInfo:
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
            raise self._invalid(f"tensor {name!r}: no known dtype")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            raise self._invalid(f"tensor {name!r}: bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise self._invalid(f"tensor {name!r}: bad data_offsets {offsets!r}")
        if offsets[1] > data_length:
            raise self._invalid(f"tensor {name!r} ends at data byte {offsets[1]} but the file holds {data_length} "
                                "(truncated?)")
        itemsize = _DTYPES[info["dtype"]][1].itemsize
        if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
            raise self._invalid(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape}")
        return _TensorInfo(info["dtype"], tuple(shape), data_start + offsets[0])

    @property
    def names(self) -> list[str]:
        return list(self._tensors)

    def _info(self, name: str) -> _TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise StoreError(f"{self.path}: no tensor {name!r}; it has {self.names}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return _DTYPES[self._info(name).dtype][0]

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            info = self._info(name)
            numpy_dtype = _DTYPES[info.dtype][1]
            flat = np.frombuffer(self._map, dtype=numpy_dtype, count=math.prod(info.shape), offset=info.start)
            self._arrays[name] = flat.reshape(info.shape)
        return self._arrays[name]

    def rows(self, name: str, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """A fresh CPU tensor of the selected rows: all, a slice, or a 1-D integer tensor (any order, repeats)."""
        array = self._array(name)
        if array.ndim == 0:
            raise StoreError(f"{self.path}: tensor {name!r} is a scalar, it has no rows")
        if index is None or isinstance(index, slice):
            selected = np.array(array[index if index is not None else slice(None)])
        else:
            if index.ndim != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
                raise TypeError(f"row index must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}")
            rows = index.detach().cpu().to(torch.int64)
            if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= array.shape[0]):
                raise IndexError(f"{self.path}: rows of {name!r} must be in [0, {array.shape[0]})")
            selected = array[rows.numpy()]
        tensor = torch.from_numpy(selected)
        return tensor.view(torch.bfloat16) if self._info(name).dtype == "BF16" else tensor
