"""Results of a training job read the way the trainer writes them (SAE exports, the metrics log, the curve plot),
and the progress bar's choice between tqdm's notebook widget and its text bar."""

from __future__ import annotations

import io
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from interp_operator.api.saetrainingjob import SAETrainingJobStatus
from interp_operator.sdk import Mounts, progress
from interp_operator.sdk.client import Client
from interp_operator.sdk.results import Results
from interp_workloads.sae import CoderConfig, SparseCoder, export_sae


class _Offline:
    namespace = "ns"

    def request(self, *args, **kwargs):
        raise AssertionError("no API call expected")


def _results(tmp_path, saes) -> Results:
    handle = Client(transport=_Offline(), mounts={})._handle({
        "apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": {"name": "j", "namespace": "ns"},
        "spec": {"output": {"claimName": "data", "subPath": "runs/j"}, "saes": [{"name": n} for n in saes]}})
    return Results(handle, Mounts({"data": str(tmp_path / "claim")}))


def test_a_trained_sae_loads_and_reconstructs_like_the_coder_that_was_exported(tmp_path):
    torch.manual_seed(0)
    trained = SparseCoder(CoderConfig(architecture="topk", d_in=16, d_sae=64, k=4))
    folder = tmp_path / "claim" / "runs" / "j" / "l0-topk"
    export_sae(trained, folder, input_scale=1.0, hook="resid_post.0", target_hook=None, model="tiny")
    results = _results(tmp_path, ["l0-topk"])

    loaded = results.load_sae("l0-topk")
    x = torch.randn(32, 16)
    with torch.no_grad():
        expected = trained.decode(trained.encode(x))
        got = loaded.decode(loaded.encode(x))
    torch.testing.assert_close(got, expected)
    # The weights are the file's, read here with plain safetensors.
    assert torch.equal(loaded.W_dec.detach(), load_file(str(folder / "sae.safetensors"))["W_dec"])
    with pytest.raises(KeyError, match="no SAE 'other'"):
        results.load_sae("other")


def test_sae_lens_object_when_sae_lens_is_installed(tmp_path, monkeypatch):
    trained = SparseCoder(CoderConfig(architecture="topk", d_in=8, d_sae=32, k=2))
    export_sae(trained, tmp_path / "claim" / "runs" / "j" / "a", input_scale=1.0, hook="resid_post.0",
               target_hook=None, model="tiny")
    results = _results(tmp_path, ["a"])
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        pass
    else:
        lens = results.load_sae_lens("a")
        x = torch.randn(4, 8)
        with torch.no_grad():
            torch.testing.assert_close(lens.decode(lens.encode(x)), trained.decode(trained.encode(x)))
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match="pip install sae-lens"):
        results.load_sae_lens("a")


def test_training_curves_as_data_and_the_plot(tmp_path):
    results = _results(tmp_path, ["a"])
    with pytest.raises(FileNotFoundError, match="no training metrics"):
        results.training_curves()
    with pytest.raises(FileNotFoundError, match="no training-curve plot"):
        results.training_curves_png()
    out = tmp_path / "claim" / "runs" / "j"
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "tokens": 64, "sae": "a", "fvu": 0.5}\n[1]\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: a metrics record needs a string field 'sae'"):
        results.training_curves()
    (out / "training-curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert results.training_curves_png() == out / "training-curves.png"


def _kernel(monkeypatch, *, widgets: bool) -> None:
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    import tqdm.notebook

    monkeypatch.setattr(tqdm.notebook, "IProgress", object if widgets else None)


def test_a_plain_python_process_gets_the_text_bar():
    assert not progress.in_notebook()
    bar = progress.StatusBar("job", stream=io.StringIO())
    assert not bar.notebook and bar._tqdm.__module__ == "tqdm.std"


def test_a_jupyter_kernel_gets_the_widget(monkeypatch):
    _kernel(monkeypatch, widgets=True)
    assert progress.in_notebook()
    bar = progress.StatusBar("job")
    assert bar.notebook and bar._tqdm.__module__ == "tqdm.notebook"


def test_a_kernel_without_ipywidgets_falls_back_to_the_text_bar(monkeypatch):
    _kernel(monkeypatch, widgets=False)
    stream = io.StringIO()
    bar = progress.StatusBar("job", stream=stream)
    assert not bar.notebook
    bar.update(SAETrainingJobStatus.model_validate(
        {"phase": "Running", "progress": {"tokensDone": 50, "tokensTotal": 100, "percent": 50.0}}))
    bar.close()
    assert "job:  50%" in stream.getvalue()
