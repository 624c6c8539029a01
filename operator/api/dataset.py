"""The text corpus a model runs over (ActivationDump, on-the-fly SAE training)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel
from .common import StorageRef


class DatasetSpec(ApiModel):
    """A text corpus: one file or a directory of files in one format."""

    source: StorageRef
    """File or directory holding the corpus (a directory is read in sorted file-name order)."""
    format: Literal["text", "jsonl", "parquet"] = "jsonl"
    """text: one document per file, or per blank-line-separated block. jsonl / parquet: one document per record."""
    text_field: str = Field("text", min_length=1, max_length=256)
    """Record field holding the document text (jsonl, parquet)."""
    max_tokens: int | None = Field(None, ge=1)
    """Stop after this many tokens; unset reads the whole corpus."""
