"""Sparse autoencoders and transcoders: architectures, fast sparse decoders, export and loading (needs torch).

``SparseCoder(CoderConfig(...))`` trains (its forward returns a ``CoderOutput`` with the loss), ``encode`` /
``decode`` serve the instrumentation splice, ``export_sae`` writes the SAELens disk format and ``load_sae`` reads
it back. See docs/sae.md.
"""

from .coder import CoderOutput, SparseCoder, geometric_median
from .config import ARCHITECTURES, CoderConfig
from .export import CONFIG_FILE, SAELENS_WEIGHTS_FILE, WEIGHTS_FILE, export_sae, load_sae

__all__ = [
    "ARCHITECTURES",
    "CONFIG_FILE",
    "SAELENS_WEIGHTS_FILE",
    "WEIGHTS_FILE",
    "CoderConfig",
    "CoderOutput",
    "SparseCoder",
    "export_sae",
    "geometric_median",
    "load_sae",
]
