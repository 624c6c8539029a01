"""The instrumented forward and backward passes: hook points, capture, interventions, attribution (needs torch)."""

from ..spec import FunctionEdit
from .api import Attribution, ForwardResult, attribute, capture, capture_from_spec, forward, hook_points
from .edits import InterventionError, last_positions
from .families import FAMILIES, Family, UnsupportedModelError, family_for, supported_model_types
from .hookpoints import HookPoint, HookPointError, Site, canonical_names, num_layers, resolve
from .runtime import hooks_installed
from .sae import SAE, SparseAutoencoder

__all__ = [
    "FAMILIES",
    "SAE",
    "Attribution",
    "Family",
    "ForwardResult",
    "FunctionEdit",
    "HookPoint",
    "HookPointError",
    "InterventionError",
    "Site",
    "SparseAutoencoder",
    "UnsupportedModelError",
    "attribute",
    "canonical_names",
    "capture",
    "capture_from_spec",
    "family_for",
    "forward",
    "hook_points",
    "hooks_installed",
    "last_positions",
    "num_layers",
    "resolve",
    "supported_model_types",
]
