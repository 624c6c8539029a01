"""Tiny random-weight models of every supported family, built once per session and loaded like real checkpoints."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from collections.abc import Callable

import pytest
from transformers.utils import logging as hf_logging

from interp_workloads.models import LoadedModel, load_model
from interp_workloads.spec import ModelSpec
from interp_workloads.testing import build_tiny_model

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., LoadedModel]:
    """``tiny_model(family, **config_overrides)``: saved to disk once per distinct request, then loaded."""
    built: dict[tuple, LoadedModel] = {}

    def get(family: str, **overrides: object) -> LoadedModel:
        key = (family, tuple(sorted(overrides.items())))
        if key not in built:
            directory = tmp_path_factory.mktemp(family)
            build_tiny_model(family, directory, n_layers=3, **overrides)
            built[key] = load_model(ModelSpec(model=str(directory)))
        return built[key]

    return get


@pytest.fixture(scope="session")
def gpt2(tiny_model: Callable[..., LoadedModel]) -> LoadedModel:
    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def llama(tiny_model: Callable[..., LoadedModel]) -> LoadedModel:
    return tiny_model("llama")
