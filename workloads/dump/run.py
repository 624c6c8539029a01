"""The dump, stage by stage: tokenise (rank 0), extract this rank's shards, shuffle, and (rank 0) verify and write the
manifest. Ranks coordinate only through the output directory, so any rank can restart alone and resume.

Shard k belongs to rank k mod W. Extraction writes shard k from token shard k; with the shuffle on it writes to raw/,
and the shuffle pass then builds final shard b from a seeded random 1/S of every raw shard, permuted (two passes,
memory bound: one shard of every hook point).
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch

from interp_operator.logs import get_logger

from ..instrument import attribute, capture
from ..models import LoadedModel, load_model
from ..profiling import StepProfiler
from ..progress import ProgressReporter, status_server_from_env
from ..spec import ModelSpec, Objective
from ..store.files import ShardFile, StoreError, sha256_file, verify_file, write_json_atomic
from ..store.manifest import (
    FORMAT,
    MANIFEST,
    ModelInfo,
    ShardRecord,
    ShuffleInfo,
    StoreManifest,
    TokenizerInfo,
    build_manifest,
)
from ..store.reader import ActivationStore
from ..store.verify import verify_store
from .config import ConfigError, DumpConfig
from .metrics import DumpMetrics
from .shards import BackgroundWriter, completed_record, generator, write_shard
from .tokens import STAGE as TOKEN_STAGE
from .tokens import TokenIndex, TokenSource, tokenize

FINGERPRINT = "dump-config.json"
SHUFFLE_MEMORY_BYTES = 2 << 30
"""What the shuffle pass holds at once: this many bytes of final shards (at least one shard)."""
COLUMNS = ("token_ids", "document_ids", "positions")
LOSS = Objective(kind="loss")
_log = get_logger("interp_workloads.dump")


def _split(tokens: int, buckets: int, bucket: int) -> slice:
    """Bucket ``bucket``'s part of ``tokens`` rows: nearly equal parts, the first ``tokens % buckets`` one larger."""
    base, extra = divmod(tokens, buckets)
    start = bucket * base + min(bucket, extra)
    return slice(start, start + base + (bucket < extra))


def scatter_order(tokens: int, seed: int, shard: int) -> torch.Tensor:
    """The order raw shard ``shard``'s rows are written in: a seeded permutation, so that each final shard's part of
    it (:func:`_split`) is a random sample read as one contiguous slice."""
    return torch.randperm(tokens, generator=generator(seed, "scatter", shard))


def bucket_sizes(raw_tokens: list[int], buckets: int) -> list[int]:
    """Rows of every final shard: the sum of its parts of the raw shards."""
    parts = [[_split(tokens, buckets, b) for tokens in raw_tokens] for b in range(buckets)]
    return [sum(part.stop - part.start for part in row) for row in parts]


class Dump:
    def __init__(self, config: DumpConfig):
        self.config, self.spec, self.root = config, config.spec, config.output
        self.hooks = list(config.spec.hook_points)
        self.dtype = getattr(torch, config.spec.dtype)
        self.stage = "start"
        self.steps = 0
        self.reporter = ProgressReporter(unit="tok")
        self.metrics = DumpMetrics()
        self.source = TokenSource(self.root, self._tokenizer_error)
        self._token_error: BaseException | None = None
        self._stop = threading.Event()
        self.loaded: LoadedModel | None = None
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.profiler: StepProfiler | None = None

    # -- entry point -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run this rank's part; return the termination message (rank 0: the verified store's summary)."""
        config = self.config
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_fingerprint()
        if (self.root / MANIFEST).exists():
            return self._existing()
        server = status_server_from_env(self.report, lambda: self.metrics.render(self.report()))
        self.profiler = StepProfiler(self.root / "profiles", name=f"rank{config.rank}")
        tokenizer_thread = None
        try:
            self.loaded = self._load_model()
            self.shapes = self._probe_shapes()
            if config.rank == 0:
                # The copied context carries the bound job and rank into the tokenizer's log lines.
                tokenizer_thread = threading.Thread(target=contextvars.copy_context().run, args=(self._tokenize,),
                                                    name="tokenizer", daemon=True)
                tokenizer_thread.start()
            self.stage = "extract"
            self._extract()
            index = self.source.refresh()
            assert index is not None  # the extraction loop ends only once the index says where the corpus ends
            if self.spec.shuffle.enabled:
                self.stage = "shuffle"
                self._shuffle(index)
            if config.rank != 0:
                self.stage = "done"
                return {"rank": config.rank, "stage": "done"}
            self.stage = "verify"
            manifest = self._finalize(index)
            self.stage = "done"
            return self._summary(manifest)
        finally:
            self._stop.set()
            if tokenizer_thread is not None:
                tokenizer_thread.join()
            self.profiler.close()
            self.reporter.close()
            if server is not None:
                server.stop()

    # -- set-up ------------------------------------------------------------------------------------------------
    def _check_fingerprint(self) -> None:
        """A rerun resumes only the same dump: an output holding another configuration's store is never mixed."""
        path = self.root / FINGERPRINT
        mine: dict[str, Any] = {"fingerprint": self.config.fingerprint(), "content": self.config.content()}
        if self.config.rank == 0 and not path.exists():
            write_json_atomic(path, mine)
            return
        while not path.exists():  # rank 0 writes it before anything else
            self._stop.wait(0.5)
        theirs = json.loads(path.read_text())
        if theirs.get("fingerprint") != mine["fingerprint"]:
            changed = sorted(k for k in {*mine["content"], *theirs.get("content", {})}
                             if mine["content"].get(k) != theirs.get("content", {}).get(k))
            raise ConfigError(f"{self.root} already holds a dump of another configuration (differs in: "
                              f"{', '.join(changed)}); choose another output or delete that one")

    def _load_model(self) -> LoadedModel:
        model = self.spec.model
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        return load_model(ModelSpec(model=self.config.model, revision=model.revision, dtype=model.dtype,
                                    device=device, trust_remote_code=model.trust_remote_code))

    def _probe_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-token shape of every hook point; an unknown hook point fails here, before any work."""
        assert self.loaded is not None
        model = self.loaded.model
        batch = {"input_ids": torch.zeros(1, 2, dtype=torch.long, device=model.device)}
        return {h: tuple(x.shape[2:]) for h, x in capture(model, batch, self.hooks).items()}

    def _tokenize(self) -> None:
        assert self.loaded is not None
        try:
            tokenize(self.config, self.loaded.tokenizer, self._stop, self.source.notify)
        except BaseException as err:  # surfaced in the main thread by TokenSource.wait
            self._token_error = err
            self.source.notify()

    def _tokenizer_error(self) -> BaseException | None:
        return self._token_error

    # -- stage 2: extraction -----------------------------------------------------------------------------------
    def _extract(self) -> None:
        config, stage = self.config, self.config.stage
        writer = BackgroundWriter(depth=1)
        try:
            shard = config.rank
            while (tokens := self.source.wait(shard)) is not None:
                if (index := self.source.refresh()) is not None:
                    mine = range(config.rank, index.shards, config.world_size)
                    self.reporter.set_total(sum(min(config.spec.tokens_per_shard, index.tokens - k *
                                                    config.spec.tokens_per_shard) for k in mine))
                if completed_record(self.root, stage, shard) is not None:
                    _log.info("shard already complete", stage=stage, shard=shard)
                    self.metrics.shards_resumed.inc()
                    self.reporter.update(tokens.tokens, shard=shard)
                else:
                    writer.submit(self._extract_job(shard, tokens))
                shard += config.world_size
        finally:
            writer.close()

    def _extract_job(self, shard: int, tokens: ShardRecord) -> Any:
        ids, documents = self.source.read(tokens, self.spec.context_length)
        activations, gradients = self._forward(ids, shard)
        length = self.spec.context_length
        columns = {"token_ids": ids.reshape(-1), "document_ids": documents.reshape(-1),
                   "positions": torch.arange(length, dtype=torch.int32).repeat(ids.shape[0])}
        if self.config.stage == "raw":
            order = scatter_order(ids.numel(), self.spec.shuffle.seed, shard)
            columns = {name: column[order] for name, column in columns.items()}
            activations = {hook: x[order] for hook, x in activations.items()}
            gradients = None if gradients is None else {hook: g[order] for hook, g in gradients.items()}
        return partial(self._write_shard, self.config.stage, shard, tokens.token_start, columns, activations,
                       gradients)

    def _write_shard(self, stage: str, shard: int, token_start: int, columns: dict[str, torch.Tensor],
                     activations: dict[str, torch.Tensor], gradients: dict[str, torch.Tensor] | None) -> ShardRecord:
        record = write_shard(self.root, stage, shard, token_start, columns, activations, gradients)
        self.metrics.shards_written.labels(stage).inc()
        return record

    def _forward(self, ids: torch.Tensor, shard: int
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        assert self.loaded is not None and self.profiler is not None
        model, size = self.loaded.model, self.spec.batch_size
        acts: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        grads: dict[str, list[torch.Tensor]] | None = {h: [] for h in self.hooks} if self.spec.capture_gradients \
            else None
        for start in range(0, ids.shape[0], size):
            batch = {"input_ids": ids[start:start + size].to(device=model.device, dtype=torch.long)}
            self.profiler.step(self.steps)
            if grads is None:
                got, got_grads = capture(model, batch, self.hooks, stop_early=True), None
            else:
                result = attribute(model, batch, self.hooks, LOSS)
                got, got_grads = result.activations, result.gradients
            for hook in self.hooks:
                acts[hook].append(self._stored(got[hook]))
                if grads is not None and got_grads is not None:
                    grads[hook].append(self._stored(got_grads[hook]))
            self.steps += 1
            self.reporter.update(batch["input_ids"].numel(), shard=shard)
            self.metrics.rank_tokens.inc(batch["input_ids"].numel())
        return ({h: torch.cat(v) for h, v in acts.items()},
                None if grads is None else {h: torch.cat(v) for h, v in grads.items()})

    def _stored(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, ...] → [tokens, d] in the stored dtype, on the CPU (cast first: less to copy)."""
        return x.reshape(x.shape[0] * x.shape[1], -1).to(dtype=self.dtype).cpu()

    # -- stage 3: shuffle --------------------------------------------------------------------------------------
    def _wait_records(self, stage: str, count: int) -> list[ShardRecord]:
        records: list[ShardRecord] = []
        for shard in range(count):
            while (record := completed_record(self.root, stage, shard, check_files=False)) is None:
                self._stop.wait(0.5)
            records.append(record)
        return records

    def _my_buckets(self, count: int) -> range:
        """Rank r builds a contiguous run of final shards, so that a group of them is one slice of every raw shard."""
        rank, world = self.config.rank, self.config.world_size
        return range(rank * count // world, (rank + 1) * count // world)

    def _group_size(self, raw: list[ShardRecord]) -> int:
        """Final shards built per pass over the raw shards: as many as fit in SHUFFLE_MEMORY_BYTES (at least one)."""
        largest = max(sum(entry.bytes for entry in record.files.values()) for record in raw)
        return max(1, SHUFFLE_MEMORY_BYTES // max(largest, 1))

    def _shuffle(self, index: TokenIndex) -> None:
        raw = self._wait_records("raw", index.shards)
        todo = [b for b in self._my_buckets(index.shards) if completed_record(self.root, "shards", b) is None]
        size = self._group_size(raw)
        for first in range(0, len(todo), size):
            self._write_buckets(todo[first:first + size], raw)

    def _write_buckets(self, buckets: list[int], raw: list[ShardRecord]) -> list[ShardRecord]:
        """Final shards ``buckets``: each takes its part of every (pre-permuted) raw shard, then is permuted itself.

        Every raw file is read once per call, as one contiguous slice covering all of the group's parts.
        """
        count, seed = len(raw), self.spec.shuffle.seed
        spans = [(_split(r.tokens, count, buckets[0]).start, _split(r.tokens, count, buckets[-1]).stop) for r in raw]
        sizes = bucket_sizes([r.tokens for r in raw], count)

        def gather(hook: str, name: str) -> dict[int, torch.Tensor]:
            parts: dict[int, list[torch.Tensor]] = {b: [] for b in buckets}
            for record, (low, high) in zip(raw, spans, strict=True):
                block = ShardFile(self.root / record.files[hook].path).rows(name, slice(low, high))
                for b in buckets:
                    part = _split(record.tokens, count, b)
                    parts[b].append(block[part.start - low:part.stop - low])
            return {b: torch.cat(p) for b, p in parts.items()}

        columns = {name: gather(self.hooks[0], name) for name in COLUMNS}
        activations = {h: gather(h, "activations") for h in self.hooks}
        gradients = {h: gather(h, "gradients") for h in self.hooks} if self.spec.capture_gradients else None
        records = []
        for b in buckets:
            order = torch.randperm(sizes[b], generator=generator(seed, "bucket", b))
            records.append(self._write_shard(
                "shards", b, sum(sizes[:b]),
                {name: column[b][order] for name, column in columns.items()},
                {h: x[b][order] for h, x in activations.items()},
                None if gradients is None else {h: g[b][order] for h, g in gradients.items()},
            ))
            self.reporter.update(0, shuffled=b)
        return records

    # -- stage 4: manifest (rank 0) ----------------------------------------------------------------------------
    def _redo(self, shard: int, index: TokenIndex) -> ShardRecord:
        if self.spec.shuffle.enabled:
            return self._write_buckets([shard], self._wait_records("raw", index.shards))[0]
        tokens = self.source.wait(shard)
        assert tokens is not None
        job = self._extract_job(shard, tokens)
        return job()  # type: ignore[no-any-return]

    def _finalize(self, index: TokenIndex) -> StoreManifest:
        """Verify every final shard against its record (redo any that fail), then write the manifest last."""
        records = self._wait_records("shards", index.shards)

        def broken(record: ShardRecord) -> str | None:
            try:
                for entry in record.files.values():
                    verify_file(self.root, entry)
            except StoreError as err:
                return str(err)
            return None

        with ThreadPoolExecutor(max_workers=4) as pool:
            problems = list(pool.map(broken, records))
        for shard, problem in enumerate(problems):
            if problem is not None:
                _log.warning("shard failed verification; writing it again", shard=shard, problem=problem)
                self.metrics.shards_rewritten.inc()
                records[shard] = self._redo(shard, index)
        assert self.loaded is not None
        manifest = build_manifest(
            records,
            hooks=[(h, list(self.shapes[h]), self.spec.dtype, self.spec.capture_gradients) for h in self.hooks],
            format=FORMAT,
            model=ModelInfo(id=self._model_id(), revision=self.spec.model.revision,
                            family=self.loaded.family.name if self.loaded.family else None,
                            dtype=self.spec.model.dtype),
            tokenizer=self._tokenizer_info(),
            context_length=self.spec.context_length,
            prepend_bos=index.prepend_bos,
            dtype=self.spec.dtype,
            contexts=index.contexts,
            documents=index.documents,
            shuffle=ShuffleInfo(enabled=self.spec.shuffle.enabled, seed=self.spec.shuffle.seed),
            config=self.config.raw.get("spec", {}),
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        write_json_atomic(self.root / MANIFEST, manifest)
        ActivationStore(self.root)  # the manifest reads back and validates
        for scratch in (TOKEN_STAGE, "raw"):
            shutil.rmtree(self.root / scratch, ignore_errors=True)
        _log.info("store complete", manifest=str(self.root / MANIFEST), tokens=manifest.tokens,
                  shards=len(manifest.shards), bytes=manifest.bytes)
        return manifest

    def _model_id(self) -> str:
        model = self.spec.model
        if model.hub_id:
            return model.hub_id
        storage = model.storage
        assert storage is not None
        if storage.claim_name:
            return f"pvc://{storage.claim_name}/{storage.sub_path or ''}".rstrip("/")
        return str(storage.uri)

    def _tokenizer_info(self) -> TokenizerInfo:
        assert self.loaded is not None
        tokenizer = self.loaded.tokenizer
        file = Path(self.config.model) / "tokenizer.json"
        return TokenizerInfo(name_or_path=self._model_id(), vocab_size=len(tokenizer),
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             sha256=sha256_file(file) if file.is_file() else None)

    def _existing(self) -> dict[str, Any]:
        """The store is already complete (a rerun, or a pod restarted after rank 0 finished): verify, report."""
        self.stage = "done"
        if self.config.rank != 0:
            return {"rank": self.config.rank, "stage": "done"}
        self.stage = "verify"
        manifest = verify_store(self.root)
        self.stage = "done"
        return self._summary(manifest)

    def _summary(self, manifest: StoreManifest) -> dict[str, Any]:
        widths = {hook.d for hook in manifest.hooks}
        return {"verified": True, "manifest": MANIFEST, "tokens": manifest.tokens, "shards": len(manifest.shards),
                "bytes": manifest.bytes, "hookPoints": [h.name for h in manifest.hooks],
                "dModel": widths.pop() if len(widths) == 1 else None, "dtype": manifest.dtype,
                "sha256": sha256_file(self.root / MANIFEST)}

    # -- progress ----------------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Store-wide progress as this rank sees the output directory (served to the operator).

        Tokens count as done once extracted (the forward passes are the cost); shards once final.
        """
        index = self.source.index
        total = index.tokens if index else None
        extracted = _count_records(self.root / self.config.stage) * self.spec.tokens_per_shard
        if self.stage in ("shuffle", "verify", "done"):
            extracted = total or extracted  # every shard is extracted before these stages begin
        return {
            "rank": self.config.rank, "worldSize": self.config.world_size, "stage": self.stage,
            "shardsDone": _count_records(self.root / "shards"), "shardsTotal": index.shards if index else None,
            "tokensDone": min(extracted, total) if total else extracted, "tokensTotal": total,
            "bytesWritten": _bytes_under(self.root / "shards"), "tokensPerSecond": round(self.reporter.rate(), 3),
        }


def _count_records(directory: Path) -> int:
    return sum(1 for _ in directory.glob("shard-*.json")) if directory.exists() else 0


def _bytes_under(directory: Path) -> int:
    if not directory.exists():
        return 0
    return sum(f.stat().st_size for f in directory.glob("*/*.safetensors"))
