"""The store reader: which global rows each rank gets, shuffling, resumption, looping and checksums.

The synthetic store's activations encode their global row (``_values``), so every batch says exactly which rows it
holds; the references are plain index arithmetic over those rows.
"""

from __future__ import annotations

import json
from itertools import islice

import pytest
import torch

from interp_workloads.store import ActivationStore, Position, StoreError, StoreReader, shard_file
from interp_workloads.store import reader as reader_module
from interp_workloads.store.synthetic import write_synthetic_store

SHARDS = [7, 3, 10]  # uneven, 20 rows
TOKENS = sum(SHARDS)
HOOKS = {"resid_post.0": 4, "mlp_out.1": 3}
CODE = {"resid_post.0": 1000, "mlp_out.1": 2000}


def _values(hook: str, rows: torch.Tensor) -> torch.Tensor:
    """Row r of a hook: [r, r + code + 1, r + code + 2, ...], exact in float16 and bfloat16 for these sizes."""
    columns = torch.arange(HOOKS[hook], dtype=torch.float32)
    values = rows[:, None].float() + CODE[hook] * (columns > 0) + columns
    return values


def _rows(batch, hook: str = "resid_post.0") -> list[int]:
    return batch.activations[hook][:, 0].long().tolist()


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    write_synthetic_store(root, SHARDS, HOOKS, values=_values, gradients=True, vocab_size=13)
    return root


@pytest.fixture
def store(store_root):
    return ActivationStore(store_root)


def _read(store, batch_size: int, world_size: int = 1, steps: int | None = None, **kw) -> list[list[list[int]]]:
    """Rows of each step (outer) of each rank (inner), all ranks stepping together."""
    readers = [StoreReader(store, list(HOOKS), batch_size, rank=r, world_size=world_size, **kw)
               for r in range(world_size)]
    return [[_rows(b) for b in step] for step in islice(zip(*readers, strict=False), steps)]


def _flat(steps: list[list[list[int]]]) -> list[int]:
    return [row for step in steps for rank in step for row in rank]


def test_one_rank_without_shuffle_reads_the_rows_in_order(store):
    reader = StoreReader(store, list(HOOKS), 6)
    assert len(reader) == reader.steps_per_epoch == 3
    batches = list(reader)
    assert [_rows(b) for b in batches] == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]  # tail dropped
    assert [b.position for b in batches] == [Position(0, 6), Position(0, 12), Position(0, 18)]
    assert len(reader) == 0 and reader.position == Position(0, 18)
    for batch in batches:
        rows = torch.tensor(_rows(batch))
        for hook in HOOKS:
            assert torch.equal(batch.activations[hook], _values(hook, rows))
        assert torch.equal(batch.token_ids, rows % 13) and batch.token_ids.dtype == torch.int64
        assert batch.gradients is None
    assert list(reader) == []  # exhausted


def test_the_ranks_of_a_step_cover_its_global_block(store):
    steps = _read(store, batch_size=2, world_size=3)
    assert len(steps) == 3  # 20 // 6
    for number, step in enumerate(steps):
        assert [row for rank in step for row in rank] == list(range(number * 6, number * 6 + 6))
        assert step[1] == list(range(number * 6 + 2, number * 6 + 4))  # rank r: rows [offset + rB, offset + (r+1)B)


@pytest.mark.parametrize("shuffle_window", [0, 5, 8, 64])
def test_world_sizes_read_the_same_global_sequence(store, shuffle_window):
    one = _flat(_read(store, batch_size=6, shuffle_window=shuffle_window, seed=3))
    three = _flat(_read(store, batch_size=2, world_size=3, shuffle_window=shuffle_window, seed=3))
    two = _flat(_read(store, batch_size=3, world_size=2, shuffle_window=shuffle_window, seed=3))
    assert one == three == two
    assert len(one) == 18 and len(set(one)) == 18


def test_shuffle_permutes_each_window(store):
    epoch0 = _flat(_read(store, batch_size=4, shuffle_window=8, seed=1))  # 20 rows: windows of 8, 8 and 4
    assert len(epoch0) == TOKENS
    for lo, hi in [(0, 8), (8, 16), (16, 20)]:
        assert sorted(epoch0[lo:hi]) == list(range(lo, hi))
    assert epoch0 != list(range(TOKENS))
    assert _flat(_read(store, batch_size=4, shuffle_window=8, seed=1)) == epoch0  # deterministic
    assert _flat(_read(store, batch_size=4, shuffle_window=8, seed=2)) != epoch0  # another seed
    epoch1 = _flat(_read(store, batch_size=4, shuffle_window=8, seed=1, start=Position(1, 0)))
    assert epoch1 != epoch0 and all(sorted(epoch1[lo:hi]) == list(range(lo, hi)) for lo, hi in [(0, 8), (8, 16)])
    whole = _flat(_read(store, batch_size=4, shuffle_window=TOKENS, seed=1))
    assert sorted(whole) == list(range(TOKENS)) and whole != list(range(TOKENS))


def test_shuffled_batches_carry_their_rows_data(store):
    reader = StoreReader(store, list(HOOKS), 5, shuffle_window=7, seed=4, gradients=True)
    for batch in reader:
        rows = torch.tensor(_rows(batch))
        for hook in HOOKS:
            assert torch.equal(batch.activations[hook], _values(hook, rows))
            assert torch.equal(batch.gradients[hook], -_values(hook, rows))
        assert torch.equal(batch.token_ids, rows % 13)


def test_loop_continues_into_the_next_epoch(store):
    reader = StoreReader(store, list(HOOKS), 6, loop=True)
    batches = list(islice(reader, 7))
    assert [b.position for b in batches] == [Position(0, 6), Position(0, 12), Position(0, 18),
                                             Position(1, 6), Position(1, 12), Position(1, 18), Position(2, 6)]
    assert [_rows(b) for b in batches[3:6]] == [_rows(b) for b in batches[:3]]
    assert len(reader) == 2  # left in epoch 2


@pytest.mark.parametrize(("stop_after", "shuffle_window"), [(1, 0), (2, 7), (3, 7), (4, 5)])
def test_resuming_from_a_position_equals_continuing(store, stop_after, shuffle_window):
    kw = {"shuffle_window": shuffle_window, "seed": 9, "loop": True}
    uninterrupted = [_rows(b) for b in islice(StoreReader(store, list(HOOKS), 4, **kw), 10)]
    first = StoreReader(store, list(HOOKS), 4, **kw)
    saved = [b.position for b in islice(first, stop_after)][-1]
    position = Position.from_dict(json.loads(json.dumps(saved.to_dict())))  # as a checkpoint stores it
    resumed = [_rows(b) for b in islice(StoreReader(store, list(HOOKS), 4, start=position, **kw), 10 - stop_after)]
    assert resumed == uninterrupted[stop_after:]


@pytest.mark.parametrize(("shuffle_window", "world_size", "batch_size"), [(0, 3, 2), (7, 3, 2), (7, 1, 4), (0, 4, 1)])
def test_resuming_with_another_world_size_continues_at_the_same_global_offset(
        store, shuffle_window, world_size, batch_size):
    kw = {"shuffle_window": shuffle_window, "seed": 5}
    stream = _flat(_read(store, batch_size=1, **kw))  # every row of the epoch, in stream order
    assert len(stream) == TOKENS
    first = _read(store, batch_size=3, world_size=2, steps=1, **kw)  # consumes 6 rows
    assert _flat(first) == stream[:6]
    position = Position(0, 6)
    rest = _flat(_read(store, batch_size=batch_size, world_size=world_size, start=position, **kw))
    step = batch_size * world_size
    assert rest == stream[6 : 6 + (TOKENS - 6) // step * step]
    readers = [StoreReader(store, list(HOOKS), batch_size, rank=r, world_size=world_size, start=position, **kw)
               for r in range(world_size)]
    assert {len(r) for r in readers} == {(TOKENS - 6) // step}


def test_a_position_past_the_last_full_step(store):
    reader = StoreReader(store, list(HOOKS), 6, start=Position(0, 17))
    assert len(reader) == 0 and list(reader) == []
    looping = StoreReader(store, list(HOOKS), 6, start=Position(0, 17), loop=True)
    assert _rows(next(iter(looping))) == list(range(6)) and looping.position == Position(1, 6)


def test_gradients_and_output_dtype(store):
    batch = next(iter(StoreReader(store, ["mlp_out.1"], 4, gradients=True, dtype=torch.float16)))
    rows = torch.arange(4)
    assert batch.activations["mlp_out.1"].dtype == torch.float16
    assert torch.equal(batch.gradients["mlp_out.1"], -_values("mlp_out.1", rows).half())
    assert list(batch.activations) == ["mlp_out.1"]


def test_bfloat16_store(tmp_path):
    write_synthetic_store(tmp_path, [3, 5], HOOKS, values=_values, dtype=torch.bfloat16)
    batch = next(iter(StoreReader(tmp_path, ["resid_post.0"], 8, shuffle_window=8)))
    rows = torch.tensor(_rows(batch))
    assert sorted(rows.tolist()) == list(range(8))
    assert batch.activations["resid_post.0"].dtype == torch.bfloat16
    assert torch.equal(batch.activations["resid_post.0"], _values("resid_post.0", rows).bfloat16())


@pytest.mark.parametrize(("shards", "row", "expected"), [
    (SHARDS, 0, (0, 0)), (SHARDS, 6, (0, 6)), (SHARDS, 7, (1, 0)), (SHARDS, 9, (1, 2)), (SHARDS, 10, (2, 0)),
    (SHARDS, 19, (2, 9)), ([3, 0, 4], 3, (2, 0)), ([3, 0, 4], 2, (0, 2)),
])
def test_locate(tmp_path, shards, row, expected):
    write_synthetic_store(tmp_path, shards, {"h": 2})
    store = ActivationStore(tmp_path)
    assert store.locate(row) == expected
    with pytest.raises(IndexError):
        store.locate(sum(shards))


def test_reading_across_an_empty_shard(tmp_path):
    write_synthetic_store(tmp_path, [3, 0, 4], HOOKS, values=_values)
    assert _flat(_read(ActivationStore(tmp_path), batch_size=7)) == list(range(7))


def test_a_corrupt_shard_fails_on_first_read(tmp_path):
    write_synthetic_store(tmp_path, SHARDS, HOOKS, values=_values)
    path = tmp_path / shard_file("shards", "mlp_out.1", 2)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    reader = StoreReader(ActivationStore(tmp_path), list(HOOKS), 5)
    batches = iter(reader)
    assert [_rows(next(batches)) for _ in range(2)] == [list(range(5)), list(range(5, 10))]  # shards 0 and 1
    with pytest.raises(StoreError, match=r"mlp_out\.1/shard-000002\.safetensors: sha256"):
        next(batches)


def test_each_file_is_verified_once_per_store(store_root, monkeypatch):
    checked: list[str] = []
    real = reader_module.verify_file

    def counting(root, entry):
        checked.append(entry.path)
        real(root, entry)

    monkeypatch.setattr(reader_module, "verify_file", counting)
    store = ActivationStore(store_root, max_open_files=1)  # evicted files are reopened, not re-verified
    for _ in range(3):
        list(StoreReader(store, list(HOOKS), 4))
    assert sorted(checked) == sorted(shard_file("shards", h, i) for h in HOOKS for i in range(3))
    assert store.shard("resid_post.0", 1) is store.shard("resid_post.0", 1)


def test_store_entry_points(store_root, tmp_path):
    store = ActivationStore(store_root)
    assert store.tokens == TOKENS and store.hooks == list(HOOKS)
    assert store.verify() == store.manifest
    with pytest.raises(StoreError, match=r"not a complete store: manifest\.json missing"):
        ActivationStore(tmp_path)


@pytest.mark.parametrize(("kw", "error", "problem"), [
    ({"hooks": ["resid_post.9"]}, StoreError, "no hook 'resid_post.9'; it has: resid_post.0, mlp_out.1"),
    ({"batch_size": 7, "world_size": 3}, ValueError, "21 rows; the store has 20"),
    ({"rank": 2, "world_size": 2}, ValueError, "rank"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"shuffle_window": -1}, ValueError, "shuffle_window"),
    ({"hooks": []}, ValueError, "at least one"),
    ({"hooks": ["mlp_out.1", "mlp_out.1"]}, ValueError, "distinct"),
])
def test_reader_arguments(store, kw, error, problem):
    args = {"hooks": list(HOOKS), "batch_size": 2} | kw
    with pytest.raises(error, match=problem):
        StoreReader(store, args.pop("hooks"), args.pop("batch_size"), **args)


def test_gradients_requested_from_a_store_without_them(tmp_path):
    write_synthetic_store(tmp_path, [4], {"h": 2})
    with pytest.raises(StoreError, match=r"no gradients stored for \['h'\]"):
        StoreReader(tmp_path, ["h"], 2, gradients=True)


@pytest.mark.parametrize("data", [{"epoch": -1, "offset": 0}, {"epoch": 0}, {"epoch": 0, "offset": 1.5},
                                  {"epoch": 0, "offset": 0, "rank": 1}])
def test_invalid_positions(data):
    with pytest.raises(ValueError):
        Position.from_dict(data)
