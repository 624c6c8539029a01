"""Export a trained coder in the SAELens 6 disk format, and load such a directory back as a ``SparseCoder``.

A directory holds ``sae.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_out]``, ``b_dec``,
``threshold`` for JumpReLU-style coders), the same file under SAELens' name ``sae_weights.safetensors`` (a hard link
where the file system has them, else a copy) and ``cfg.json`` (SAELens' config keys, ours under
``metadata.interp``). ``SAE.load_from_disk`` of sae-lens reads it directly.

The trainer feeds ``x * input_scale`` (and a transcoder's target ``* target_scale``); the export folds the scales
back so the exported coder works on raw activations with identical latents: ``W_enc * s_in``, ``b_dec / s_out``,
``W_dec / s_out`` (an SAE centres with ``b_dec / s_in``, the same vector since ``s_out = s_in``). Thresholds and
``b_enc`` live in latent space and do not change.

Architectures in ``cfg.json``: ReLU -> ``standard`` (transcoder: ``transcoder``), TopK -> ``topk``, JumpReLU and
BatchTopK -> ``jumprelu`` (``jumprelu_transcoder``): BatchTopK exports its estimated threshold for every latent, as
SAELens does. A TopK transcoder has no SAELens architecture; it is written as ``topk_transcoder``, which our loader
reads and SAELens refuses.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .coder import SparseCoder
from .config import CoderConfig

WEIGHTS_FILE = "sae.safetensors"
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
FORMAT = "interp-sae"
FORMAT_VERSION = 2
# The SAELens config generation this layout follows (its loader treats configs without a 6.x version as legacy).
SAELENS_FORMAT_VERSION = "6.0.0"

_TO_SAELENS = {  # (our architecture, transcoder?) -> SAELens architecture
    ("relu", False): "standard", ("relu", True): "transcoder",
    ("topk", False): "topk", ("topk", True): "topk_transcoder",
    ("jumprelu", False): "jumprelu", ("jumprelu", True): "jumprelu_transcoder",
    ("batchtopk", False): "jumprelu", ("batchtopk", True): "jumprelu_transcoder",
}
_FROM_SAELENS = {"standard": ("relu", False), "transcoder": ("relu", True), "topk": ("topk", False),
                 "topk_transcoder": ("topk", True), "jumprelu": ("jumprelu", False),
                 "jumprelu_transcoder": ("jumprelu", True)}


def export_sae(coder: SparseCoder, directory: str | os.PathLike[str], *, input_scale: float, hook: str,
               target_hook: str | None, model: str | None, extra: dict[str, Any] | None = None,
               target_scale: float | None = None) -> Path:
    """Write ``cfg.json`` + ``sae.safetensors`` into ``directory`` (atomically, file by file); returns it.

    ``target_scale`` is the factor a transcoder's target was multiplied by (default ``input_scale``)."""
    cfg = coder.cfg
    out_scale = input_scale if target_scale is None else target_scale
    for name, value in (("input_scale", input_scale), ("target_scale", out_scale)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"export_sae: {name} must be a positive finite number, got {value!r}")
    if cfg.is_transcoder and target_hook is None:
        raise ValueError("export_sae: target_hook is required for a transcoder (d_out set)")
    if cfg.architecture == "batchtopk" and float(coder.batch_threshold) < 0:
        raise ValueError("export_sae: this BatchTopK coder never ran a training forward, so it has no threshold")
    with torch.no_grad():
        tensors = {
            "W_enc": coder.W_enc * input_scale,
            "b_enc": coder.b_enc.clone(),
            "W_dec": coder.W_dec / out_scale,
            "b_dec": coder.b_dec / out_scale,
        }
        if cfg.architecture == "jumprelu":
            tensors["threshold"] = coder.threshold.clone()
        elif cfg.architecture == "batchtopk":
            tensors["threshold"] = coder.batch_threshold.expand(cfg.d_sae).clone()
    tensors = {name: t.detach().to(torch.float32).contiguous().cpu() for name, t in tensors.items()}
    architecture = _TO_SAELENS[(cfg.architecture, cfg.is_transcoder)]
    metadata: dict[str, Any] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
        "model_name": model, "hook_name": hook, "hook_name_out": target_hook,
        "interp": {"format": FORMAT, "version": FORMAT_VERSION, "trained_architecture": cfg.architecture,
                   "input_scale": input_scale, "target_scale": out_scale, "coder": cfg.to_dict(),
                   "extra": extra or {}},
    }
    config: dict[str, Any] = {
        "architecture": architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": not cfg.is_transcoder, "normalize_activations": "none",
        "reshape_activations": "none", "metadata": metadata,
    }
    if cfg.is_transcoder:
        config["d_out"] = cfg.out_width
    if architecture.startswith("topk"):
        config["k"] = cfg.k
        config["rescale_acts_by_decoder_norm"] = False
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / WEIGHTS_FILE, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    _atomic_write(folder / SAELENS_WEIGHTS_FILE, lambda path: _link_or_copy(folder / WEIGHTS_FILE, Path(path)))
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    _atomic_write(folder / CONFIG_FILE, lambda path: Path(path).write_text(text))
    return folder


def load_sae(directory: str | os.PathLike[str], device: torch.device | str = "cpu") -> SparseCoder:
    """A ``SparseCoder`` in eval mode from an export (ours, or a SAELens standard/topk/jumprelu/transcoder one
    without activation normalisation); it works on raw activations."""
    folder = Path(directory)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not weights_path.is_file() and (folder / SAELENS_WEIGHTS_FILE).is_file():  # written by SAELens itself
        weights_path = folder / SAELENS_WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"load_sae: {path} does not exist")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from err
    architecture = config.get("architecture")
    if architecture not in _FROM_SAELENS:
        raise ValueError(f"{config_path}: architecture {architecture!r} is not one of "
                         f"{', '.join(sorted(_FROM_SAELENS))}")
    if config.get("normalize_activations", "none") != "none":
        raise ValueError(f"{config_path}: normalize_activations {config['normalize_activations']!r} is not "
                         f"supported (only 'none'; fold the normalisation into the weights first)")
    ours, transcoder = _FROM_SAELENS[architecture]
    if transcoder == bool(config.get("apply_b_dec_to_input", not transcoder)):
        raise ValueError(f"{config_path}: apply_b_dec_to_input must be {not transcoder} for {architecture!r}")
    try:
        cfg = CoderConfig(architecture=ours, d_in=int(config["d_in"]), d_sae=int(config["d_sae"]),  # type: ignore[arg-type]
                          d_out=int(config["d_out"]) if transcoder else None,
                          k=int(config["k"]) if ours == "topk" else None)
    except KeyError as err:
        raise ValueError(f"{config_path}: missing field {err.args[0]!r}") from None
    if ours == "topk" and config.get("rescale_acts_by_decoder_norm", False):
        raise ValueError(f"{config_path}: rescale_acts_by_decoder_norm is not supported")
    coder = SparseCoder(cfg, device=device)
    tensors = load_file(str(weights_path), device=str(device))
    expected = {name: tuple(p.shape) for name, p in coder.named_parameters()}
    got = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != got:
        raise ValueError(f"{weights_path}: tensors {got} do not match the config's shapes {expected}")
    with torch.no_grad():
        for name, param in coder.named_parameters():
            param.copy_(tensors[name].to(param.dtype))
    return coder.eval()


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # no hard links on this file system
        shutil.copyfile(source, target)


def _atomic_write(target: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the export from readers running as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
