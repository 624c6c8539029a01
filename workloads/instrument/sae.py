"""The SAE protocol used by the splice, and a plain reference SAE stored as safetensors + JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..spec.sae import SAEConfig

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae_config.json"

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@runtime_checkable
class SAE(Protocol):
    """What a splice needs: ``encode`` ([n, d_in] -> [n, d_sae]) and ``decode`` (back), plus widths and dtype."""

    d_in: int
    dtype: torch.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class SparseAutoencoder(nn.Module):
    """``z = act((x - b_dec) @ W_enc + b_enc)``, ``x_hat = z @ W_dec + b_dec``; act is ReLU, JumpReLU or TopK."""

    def __init__(self, config: SAEConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        dtype = _DTYPES[config.dtype]
        d, f = config.d_in, config.d_sae
        self.W_enc = nn.Parameter(torch.empty(d, f, dtype=dtype, device=device))
        self.b_enc = nn.Parameter(torch.zeros(f, dtype=dtype, device=device))
        self.W_dec = nn.Parameter(torch.empty(f, d, dtype=dtype, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=dtype, device=device))
        if config.activation == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(f, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm decoder rows, encoder initialised to the decoder's transpose."""
        with torch.no_grad():
            w = torch.randn(self.config.d_sae, self.config.d_in, generator=generator)
            w /= w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.config.activation == "relu":
            return torch.relu(pre)
        if self.config.activation == "jumprelu":
            return pre * (pre > self.threshold)
        assert self.config.k is not None
        top = pre.topk(self.config.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``sae.safetensors`` and ``sae_config.json`` atomically (temp file + rename)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().contiguous().cpu() for name, p in self.named_parameters()}
        _atomic_write(out / WEIGHTS_FILE, lambda path: save_file(tensors, str(path), metadata={"format": "pt"}))
        config_text = self.config.model_dump_json(indent=2)
        _atomic_write(out / CONFIG_FILE, lambda path: Path(path).write_text(config_text))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu") -> SparseAutoencoder:
        path = Path(directory)
        config = SAEConfig.model_validate(json.loads((path / CONFIG_FILE).read_text()))
        sae = cls(config, device=device)
        tensors = load_file(str(path / WEIGHTS_FILE), device=str(device))
        expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if expected != got:
            raise ValueError(f"{path / WEIGHTS_FILE}: tensors {got} do not match the config's shapes {expected}")
        with torch.no_grad():
            for name, p in sae.named_parameters():
                p.copy_(tensors[name].to(p.dtype))
        return sae


def _atomic_write(target: Path, write) -> None:  # type: ignore[no-untyped-def]
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
