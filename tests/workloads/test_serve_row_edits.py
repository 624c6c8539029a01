"""Per-row interventions of the serving engine, resolved once for many decode steps and applied as one dense add,
against a per-row loop written here: mixed batches (different vectors, rows without, several vectors on one row,
edits that start and stop applying), rows joining and leaving between steps."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from serve_support import Collector

from interp_workloads.instrument import Site, forward
from interp_workloads.models import LoadedModel
from interp_workloads.serve import positions
from interp_workloads.serve.engine import Engine, GenerationRequest
from interp_workloads.serve.row_edits import DecodeEdits, RowEdits
from interp_workloads.serve.sampling import SamplingParams
from interp_workloads.spec import AddVector, Intervention, PositionSlice, Projection

D = 32
A, B = Site("h.0", "output"), Site("h.1", "input")


def _vec(seed: int, norm: float = 4.0) -> list[float]:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return (v / v.norm() * norm).tolist()


def _applies(edit: Intervention, prompt_len: int, position: int) -> bool:
    """Whether ``edit`` edits the token at absolute ``position`` (the documented rules, written independently)."""
    spec = edit.positions
    if spec == "all":
        return True
    if spec == "last":
        return position >= prompt_len - 1
    if isinstance(spec, PositionSlice):
        start = 0 if spec.start is None else max(spec.start + prompt_len if spec.start < 0 else spec.start, 0)
        stop = None if spec.stop is None else (spec.stop + prompt_len if spec.stop < 0 else spec.stop)
        return start <= position and (stop is None or position < stop)
    return position in {p + prompt_len if p < 0 else p for p in spec}


def _edited(x: torch.Tensor, edit: Intervention) -> torch.Tensor:
    """One token's activation ([width]) after ``edit``, in float32 and rounded back like the engine's edits."""
    v = x.float()
    if isinstance(edit, AddVector):
        v = v + edit.scale * torch.tensor(edit.vector, dtype=torch.float32)
    else:
        assert isinstance(edit, Projection) and edit.mode == "zero"
        u = torch.tensor(edit.direction, dtype=torch.float32)
        u = u / u.norm()
        v = v - (v @ u) * u
    return v.to(x.dtype)


def _reference(x: torch.Tensor, site: Site, rows: list[FakeRow]) -> torch.Tensor:
    """The per-row loop: each row's edits at ``site`` that apply at its position, one after another."""
    out = x.clone()
    for i, row in enumerate(rows):
        for edit_site, edit in row.edits.edits:
            if edit_site == site and _applies(edit, row.edits.prompt_len, row.length):
                out[i, 0] = _edited(out[i, 0], edit)
    return out


@dataclass
class FakeRow:
    edits: RowEdits
    length: int


def _row(prompt_len: int, *edits: tuple[Site, Intervention]) -> FakeRow:
    return FakeRow(RowEdits(prompt_len, list(edits)), prompt_len)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_edits_equal_a_per_row_loop_as_rows_join_and_leave(dtype):
    rows = [
        _row(4),
        _row(5, (A, AddVector(hook="a", vector=_vec(1), scale=2.0))),
        _row(3, (A, AddVector(hook="a", vector=_vec(2), positions="last")),
             (A, AddVector(hook="a", vector=_vec(3), positions=[1, 5, 7]))),
        _row(6, (B, AddVector(hook="b", vector=_vec(4), positions=PositionSlice(start=-1, stop=11))),
             (A, AddVector(hook="a", vector=_vec(5), scale=-1.0))),
    ]
    plan = DecodeEdits({}, window=3)  # a short window: the functions are also resolved again when it ends
    generator = torch.Generator().manual_seed(0)
    for step in range(12):
        if step == 4:  # a row leaves
            del rows[1]
            plan.invalidate()
        if step == 6:  # a row joins with a projection, which takes its site off the dense path
            rows.append(_row(2, (B, Projection(hook="b", direction=_vec(6), mode="zero")),
                             (B, AddVector(hook="b", vector=_vec(7)))))
            plan.invalidate()
        fns = plan.step_fns(rows)
        for site in (A, B):
            x = torch.randn(len(rows), 1, D, generator=generator).to(dtype)
            got = fns[site](x) if site in fns else x
            torch.testing.assert_close(got, _reference(x, site, rows), rtol=0, atol=0 if site == A else 1e-6)
        for row in rows:
            row.length += 1


def test_decode_edits_resolve_once_while_nothing_changes(monkeypatch):
    calls = []
    columns = positions.columns
    monkeypatch.setattr(positions, "columns", lambda *a: calls.append(a) or columns(*a))
    rows = [_row(4, (A, AddVector(hook="a", vector=_vec(1)))), _row(3, (A, AddVector(hook="a", vector=_vec(2))))]
    plan = DecodeEdits({})
    first = plan.step_fns(rows)
    for _ in range(10):
        for row in rows:
            row.length += 1
        assert plan.step_fns(rows) is first
    assert len(calls) == 2  # one per row's edit, for every step of the window at once


# -- the engine, against a recompute without cache through hand-written hooks --------------------------------------

NEW = 8


def _module(name: str) -> tuple[str, bool]:
    kind, layer = name.split(".")
    return f"transformer.h.{layer}", kind == "resid_post"


def _recompute(lm: LoadedModel, seq: list[int], prompt_len: int, edits: list[AddVector]) -> torch.Tensor:
    """Last-token log-probabilities of ``seq`` with each vector added, by hooks on the GPT-2 blocks, in order."""

    def apply(name: str, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.clone()
        for edit in edits:
            if edit.hook == name:
                for p in range(len(seq)):
                    if _applies(edit, prompt_len, p):
                        hidden[0, p] = _edited(hidden[0, p], edit)
        return hidden

    handles = []
    for name in {e.hook for e in edits}:
        path, output = _module(name)
        module = lm.model.get_submodule(path)
        if output:
            handles.append(module.register_forward_hook(
                lambda _m, _a, out, name=name: (apply(name, out[0]), *out[1:]) if isinstance(out, tuple)
                else apply(name, out)))
        else:
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, kwargs, name=name: ((apply(name, args[0]), *args[1:]), kwargs) if args
                else (args, {**kwargs, "hidden_states": apply(name, kwargs["hidden_states"])}), with_kwargs=True))
    try:
        with torch.no_grad():
            logits = lm.model(torch.tensor([seq])).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    return torch.log_softmax(logits.float(), -1)


def test_engine_mixed_batch_with_rows_joining_and_leaving_equals_a_recompute_per_row(gpt2):
    lm = gpt2
    def prompt_len(prompt: str) -> int:
        return len(lm.tokenizer(prompt)["input_ids"])

    third, fourth = "A sparse autoencoder reads", "Steering vectors move"
    # Explicit positions and a slice's stop among the generated tokens: edits that start and stop during decoding.
    generated_at = [prompt_len(third) + k for k in (1, 3, 4)]
    cases: list[tuple[str, list[AddVector], int]] = [
        ("The quick brown fox", [], NEW),
        ("Kubernetes schedules pods onto", [AddVector(hook="resid_post.1", vector=_vec(1), scale=2.0)], 5),
        (third, [AddVector(hook="resid_post.1", vector=_vec(2), positions="last"),
                 AddVector(hook="resid_post.1", vector=_vec(3), positions=[0, 2, -1, *generated_at])], NEW),
        (fourth, [AddVector(hook="resid_pre.2", vector=_vec(4),
                            positions=PositionSlice(start=-2, stop=prompt_len(fourth) + 3))], NEW),
        ("Tokens, layers, heads", [AddVector(hook="resid_post.1", vector=_vec(5), scale=-1.5),
                                   AddVector(hook="resid_pre.2", vector=_vec(6))], 6),
    ]
    engine = Engine(lm.model, lm.tokenizer)
    sinks: list[Collector] = []

    def submit(prompt: str, edits: list[AddVector], new: int) -> None:
        sink = Collector()
        params = SamplingParams(max_new_tokens=new, temperature=0, ignore_eos=True, logprobs=5)
        engine.submit(GenerationRequest(lm.tokenizer(prompt)["input_ids"], params, edits, on_event=sink))
        sinks.append(sink)

    for case in cases[:3]:
        submit(*case)
    for steps, case in zip((2, 2), cases[3:], strict=True):  # two join the running batch; one row leaves early
        for _ in range(steps):
            engine.step()
        submit(*case)
    while engine.busy:
        engine.step()

    for (prompt, edits, new), sink in zip(cases, sinks, strict=True):
        ids = lm.tokenizer(prompt)["input_ids"]
        assert len(sink.tokens) == new
        for step, event in enumerate(e for e in sink.events if e.token is not None):
            want = _recompute(lm, ids + sink.tokens[:step], len(ids), edits)
            assert event.token == int(want.argmax()), f"{prompt!r} step {step}"
            for token, logprob in (event.top_logprobs or {}).items():
                assert logprob == pytest.approx(float(want[token]), abs=1e-4)
    plain = Collector()
    engine.submit(GenerationRequest(lm.tokenizer(cases[1][0])["input_ids"],
                                    SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True), on_event=plain))
    while engine.busy:
        engine.step()
    assert plain.tokens != sinks[1].tokens  # the vectors change the output, so the comparison above means something


def _hooks_on(model: torch.nn.Module) -> int:
    """Hooks other than the output-capturing ones transformers installs for good on a model's first forward that
    asks for attentions or hidden states (an earlier test on the shared model may have done so)."""
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return sum(not getattr(h, "__module__", "").startswith("transformers.") for h in hooks)


def test_engine_hooks_stay_for_the_batch_and_other_passes_between_steps_see_the_plain_model(gpt2):
    lm = gpt2
    batch = {"input_ids": torch.tensor([lm.tokenizer("The quick brown fox")["input_ids"]])}
    before = forward(lm.model, batch).logits
    block = lm.model.get_submodule("transformer.h.1")
    engine = Engine(lm.model, lm.tokenizer)
    params = SamplingParams(max_new_tokens=NEW, temperature=0, ignore_eos=True)

    def submit(seed: int) -> None:
        engine.submit(GenerationRequest(lm.tokenizer("Kubernetes schedules")["input_ids"], params,
                                        [AddVector(hook="resid_post.1", vector=_vec(seed), scale=3.0)]))

    submit(1)
    submit(2)
    engine.step()  # prefill (hooks for that pass only) and the first decode step (hooks that stay)
    assert _hooks_on(lm.model) == 1
    standing = list(block._forward_hooks)
    for step in range(4):
        if step == 2:
            submit(3)  # another row at the same site: new functions, the same hook
        engine.step()
        # A capture or forward between two decode steps runs on the same model: the steering must not reach it.
        assert torch.equal(forward(lm.model, batch).logits, before)
        assert list(block._forward_hooks) == standing
    assert len(engine.rows) == 3
    while engine.busy:
        engine.step()
    assert _hooks_on(lm.model) == 0
