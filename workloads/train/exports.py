"""Exports: each SAE in ``<output>/<sae name>/`` (the SAE library's format, input scale folded back), a checksum
record of every exported file in ``<output>/exports.json``, and a check that each export loads and reconstructs
like the trained coder before rank 0 reports it verified.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp_operator.logs import get_logger

from ..sae import export_sae, load_sae
from ..store.files import write_json_atomic

if TYPE_CHECKING:
    from .config import TrainConfig
    from .members import Member

EXPORTS = "exports.json"
CHECK_ROWS = 256
_log = get_logger("interp_workloads.train.exports")


class ExportError(RuntimeError):
    """An export does not read back as written (exit code 1: a retry writes it again)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _model_id(config: TrainConfig) -> str | None:
    model = config.spec.model
    if model.hub_id:
        return model.hub_id
    storage = model.storage
    if storage is None:
        return None
    if storage.claim_name:
        return f"pvc://{storage.claim_name}/{storage.sub_path or ''}".rstrip("/")
    return storage.uri


def reconstruct_trained(member: Member, x: torch.Tensor) -> torch.Tensor:
    """The trained coder's reconstruction of raw activations, in raw units (what an export must reproduce)."""
    coder = member.coder.eval()  # inference mode: BatchTopK uses its estimated threshold, as the export does
    try:
        with torch.no_grad():
            return coder.decode(coder.encode(x * member.scale)).float() / member.target_scale
    finally:
        coder.train()


def reconstruct_loaded(sae: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sae.decode(sae.encode(x.to(sae.dtype))).float()


def export_all(root: Path, members: list[Member], config: TrainConfig,
               sample: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Export every member (whole coders: a latent-sharded one gathered onto the CPU first), verify each export
    where its coder is (``sample``: raw rows of every hook), write exports.json; returns rank 0's termination
    message."""
    record: dict[str, Any] = {}
    for member in members:
        device = member.coder.W_enc.device
        folder = root / member.name
        extra = {"trainedTokens": config.spec.training.tokens, "job": config.name}
        export_sae(member.coder, folder, input_scale=member.scale, hook=member.hook, target_hook=member.target_hook,
                   model=_model_id(config), extra=extra, target_scale=member.target_scale)
        files = _files(folder)
        loaded = load_sae(folder, device)
        x = sample[member.hook].to(device)
        expected, got = reconstruct_trained(member, x), reconstruct_loaded(loaded, x)
        error = float((expected - got).norm() / expected.norm().clamp_min(1e-12))
        if not error < 1e-4:
            raise ExportError(f"{folder}: the exported SAE reconstructs with relative error {error:.2e} against "
                              f"the trained one")
        record[member.name] = {"path": member.name, "files": files, "hook": member.hook,
                               "targetHook": member.target_hook, "inputScale": member.scale}
    write_json_atomic(root / EXPORTS, {"saes": record})
    for name, entry in record.items():  # the files as they are now on disk, after every write
        if _files(root / name) != entry["files"]:
            raise ExportError(f"{root / name}: files changed after they were recorded")
    _log.info("exports verified", saes=sorted(record))
    return {"verified": True, "exports": EXPORTS, "sha256": _sha256(root / EXPORTS), "saes": sorted(record)}
