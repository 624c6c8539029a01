"""The store's error types and its record of one file (torch-free: the manifest model builds on these)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StoreError(Exception):
    """A store, or one of its files, is missing, incomplete or corrupt; the message names the file and the problem."""


class UnknownHookError(StoreError, ValueError):
    """A hook the store does not have was asked for; the message lists the hooks it has."""


def checked_path(path: str) -> str:
    """``path`` if it is a normalised relative posix path inside the store: a manifest names the files a reader
    opens, and none may point outside the store."""
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or str(pure) != path or path == ".":
        raise ValueError(f"file path {path!r} must be a normalised relative posix path inside the store")
    return path


class FileEntry(BaseModel):
    """One file of a store: where it is (relative to the store root, posix), its size and its sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    bytes: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    @field_validator("path")
    @classmethod
    def _inside_the_store(cls, path: str) -> str:
        return checked_path(path)
