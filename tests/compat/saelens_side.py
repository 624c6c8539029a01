"""Run by SAELens' own environment (``make saelens-compat``): load each export with ``SAE.load_from_disk`` and write
its encode / decode of the given inputs. Standalone: imports sae_lens, torch and safetensors only.

usage: python saelens_side.py CASES_DIR   (each subfolder holds an export and inputs.safetensors)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main(root: Path) -> None:
    from sae_lens import SAE

    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        sae = SAE.load_from_disk(str(case / "export"), device="cpu")
        x = load_file(str(case / "inputs.safetensors"))["x"]
        with torch.no_grad():
            latents = sae.encode(x)
            decoded = sae.decode(latents)
        save_file({"latents": latents.contiguous(), "decoded": decoded.contiguous()}, str(case / "saelens.safetensors"))
        print(f"{case.name}: {type(sae).__name__}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
