"""The HTTP API: native generate / forward / attribute, registries, OpenAI-compatible completions, health, metrics."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from safetensors.torch import save

from ..instrument import HookPointError, InterventionError, attribute, forward
from ..spec import Intervention
from .engine import GenerationRequest, TokenEvent
from .sampling import SamplingParams
from .schemas import (
    AttributeRequest,
    AttributeResponse,
    ChatRequest,
    CompletionRequest,
    ErrorBody,
    Feature,
    ForwardRequest,
    ForwardResponse,
    ForwardRow,
    GenerateRequest,
    GenerateResponse,
    Generation,
    HookAttribution,
    HookPointInfo,
    SAEInfo,
    TokenLogprob,
    TokenSummary,
    VectorInfo,
    VectorUpload,
)
from .server import RequestError, Server

T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 504)
}


class Tokens:
    """Accepted bearer tokens, one per line of a (Secret-mounted) file, re-read when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: float | None = None
        self._tokens: frozenset[str] = frozenset()

    def accepted(self) -> frozenset[str]:
        assert self.path is not None
        stamp = self.path.stat().st_mtime
        if stamp != self._stamp:
            lines = self.path.read_text().splitlines()
            self._tokens, self._stamp = frozenset(t.strip() for t in lines if t.strip()), stamp
        return self._tokens


class ClosingStreamingResponse(StreamingResponse):
    """A stream whose generator is closed when the response ends, so its ``finally`` (which frees the request's
    slot and leaves the batch) runs at once when the client goes away, not whenever the garbage collector
    finalises a generator left paused at a ``yield``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not they declare a Content-Length."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        response = JSONResponse({"detail": f"the request body exceeds {self.limit} bytes", "field": "body"}, 413)
        await response(scope, receive, send)


def create_app(server: Server, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="interp-operator inference server", version="1",
                  description="Generation, capture and attribution on one model, with per-request interventions.")
    app.state.server = server
    metrics = server.metrics
    limits = server.limits

    def require_token(request: Request) -> None:
        if tokens.path is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in tokens.accepted():
            metrics.rejections.labels("unauthorized").inc()
            raise RequestError(401, "Authorization", "a valid bearer token is required",
                               {"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS)

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.message, "field": error.field}, error.status, headers=error.headers)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    # -- running work ---------------------------------------------------------------------------------------------

    async def on_engine(fn: Callable[[], T]) -> T:
        """Run model work on the engine thread, within the request timeout, mapping bad input to 400."""
        assert server.worker is not None
        future = server.worker.call(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limits.request_timeout_seconds)
        except TimeoutError:
            future.cancel()
            metrics.rejections.labels("timeout").inc()
            raise RequestError(504, "", f"not done within {limits.request_timeout_seconds:g} s") from None
        except (InterventionError, HookPointError) as error:
            raise RequestError(400, "interventions", str(error)) from None

    async def events(ids: list[int], params: SamplingParams, edits: Sequence[Intervention]
                     ) -> AsyncIterator[TokenEvent]:
        assert server.worker is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        request = GenerationRequest(ids, params, edits,
                                    on_event=lambda e: loop.call_soon_threadsafe(queue.put_nowait, e))
        server.worker.submit(request)
        try:
            while True:
                event = await queue.get()
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            # A finished request ignores this; an abandoned one (client gone, timeout) leaves the batch.
            request.cancelled = True

    async def collect(http: Request, ids: list[int], params: SamplingParams, edits: Sequence[Intervention]
                      ) -> list[TokenEvent]:
        out: list[TokenEvent] = []

        async def run() -> None:
            async for event in events(ids, params, edits):
                out.append(event)

        task = asyncio.ensure_future(run())
        deadline = time.monotonic() + limits.request_timeout_seconds
        try:
            while not task.done():
                await asyncio.wait([task], timeout=0.25)
                if task.done():
                    break
                if await http.is_disconnected():
                    raise RequestError(499, "", "the client went away")
                if time.monotonic() > deadline:
                    metrics.rejections.labels("timeout").inc()
                    raise RequestError(504, "", f"not done within {limits.request_timeout_seconds:g} s")
        finally:
            task.cancel()
        task.result()
        if out and out[-1].finish_reason == "error":
            raise RuntimeError("the engine failed while serving this request")
        return out

    def default_new_tokens(asked: int | None) -> int:
        return min(16, limits.max_new_tokens) if asked is None else asked

    def sampling(body: Any, max_new: int, logprobs: int | None) -> SamplingParams:
        stop = body.stop if isinstance(body.stop, list) else [body.stop] if body.stop else []
        temperature = 1.0 if body.temperature is None else body.temperature
        return SamplingParams(max_new_tokens=max_new, temperature=temperature,
                              top_p=1.0 if body.top_p is None else body.top_p, top_k=body.top_k or 0,
                              seed=body.seed, stop=tuple(stop), logprobs=logprobs,
                              ignore_eos=getattr(body, "ignore_eos", False))

    def prepare(prompts: Sequence[str], max_new: int, items: Any, field_name: str, new_field: str
                ) -> tuple[list[list[int]], list[Intervention]]:
        many = len(prompts) > 1
        ids = [server.tokenize(p, f"{field_name}[{i}]" if many else field_name) for i, p in enumerate(prompts)]
        for i, row in enumerate(ids):
            server.check_lengths(len(row), max_new, f"{field_name}[{i}]" if many else field_name, new_field)
        return ids, server.interventions(items, [len(r) for r in ids])

    def token_logprobs(event_list: list[TokenEvent]) -> list[TokenLogprob]:
        decode = server.lm.tokenizer.decode
        return [TokenLogprob(token=e.token, text=decode([e.token]), logprob=e.logprob or 0.0,
                             top={str(k): v for k, v in e.top_logprobs.items()} if e.top_logprobs else None)
                for e in event_list if e.token is not None]

    async def admitted(fn: Callable[[], Awaitable[T]]) -> T:
        server.admit()
        try:
            return await fn()
        finally:
            server.release()

    # -- native API -----------------------------------------------------------------------------------------------

    @api.post("/v1/generate", response_model=GenerateResponse, tags=["native"])
    async def generate(body: GenerateRequest, http: Request) -> GenerateResponse:
        """Generate from one or more prompts; ``interventions`` apply to every prompt and every generated token."""
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        max_new = default_new_tokens(body.max_new_tokens)
        ids, edits = prepare(prompts, max_new, body.interventions, "prompt", "max_new_tokens")
        params = sampling(body, max_new, body.logprobs)

        async def run() -> GenerateResponse:
            results = await asyncio.gather(*(collect(http, row, params, edits) for row in ids))
            return GenerateResponse(generations=[
                Generation(text="".join(e.text for e in evs), tokens=[e.token for e in evs if e.token is not None],
                           finish_reason=evs[-1].finish_reason or "stop", prompt_tokens=len(row),
                           logprobs=token_logprobs(evs) if body.logprobs is not None else None)
                for row, evs in zip(ids, results, strict=True)])

        return await admitted(run)

    @api.post("/v1/forward", response_model=ForwardResponse, tags=["native"],
              responses={200: {"content": {"application/octet-stream": {}}}})
    async def forward_pass(body: ForwardRequest) -> Any:
        """One forward pass: activations at ``hooks`` (summaries or safetensors bytes) and top SAE features."""
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        ids = [server.tokenize(p, "prompt") for p in prompts]
        for row in ids:
            server.check_lengths(len(row), 0, "prompt", "prompt")
        edits = server.interventions(body.interventions, [len(r) for r in ids], generating=False)
        for i, hook in enumerate(body.hooks):
            try:
                server.hook_width(hook, "hook")
            except ValueError as error:
                raise RequestError(400, f"hooks[{i}]", str(error)) from None
        for i, want in enumerate(body.top_features):
            if want.sae not in server.saes:
                raise RequestError(400, f"top_features[{i}].sae", f"SAE {want.sae!r} is not loaded; loaded: "
                                   f"{sorted(server.saes) or 'none'}")
        sae_hooks = [server.sae_hooks[w.sae] for w in body.top_features]
        hooks = list(dict.fromkeys([*body.hooks, *sae_hooks]))
        batch = _right_padded(ids, server.lm.model.device)

        def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            result = forward(server.lm.model, batch, interventions=[edits] * len(ids), saes=server.saes,
                             hooks=hooks)
            return result.logits, result.activations

        logits, acts = await admitted(lambda: on_engine(run))
        if body.format == "safetensors":
            tensors = {f"activations.{h}": acts[h].float().contiguous().cpu() for h in body.hooks}
            tensors["logits"] = logits.float().contiguous().cpu()
            tensors["attention_mask"] = batch["attention_mask"].cpu()
            return Response(save(tensors, metadata={"hooks": json.dumps(body.hooks)}),
                            media_type="application/octet-stream")
        rows = []
        for r, row in enumerate(ids):
            n = len(row)
            summaries = {h: _summary(acts[h][r, :n]) for h in body.hooks}
            top: dict[str, list[list[Feature]]] = {}
            for want in body.top_features:
                latents = server.saes[want.sae].encode(acts[server.sae_hooks[want.sae]][r, :n].to(
                    server.saes[want.sae].dtype))
                values, indices = latents.topk(min(want.k, latents.shape[-1]), dim=-1)
                top[want.sae] = [[Feature(feature=int(f), value=float(v)) for f, v in zip(fi, vi, strict=True)]
                                 for fi, vi in zip(indices.tolist(), values.tolist(), strict=True)]
            last = torch.log_softmax(logits[r, n - 1].float(), -1).topk(5)
            rows.append(ForwardRow(tokens=row, summaries=summaries, top_features=top, next_token_logprobs={
                str(k): v for k, v in zip(last.indices.tolist(), last.values.tolist(), strict=True)}))
        return ForwardResponse(rows=rows)

    @api.post("/v1/attribute", response_model=AttributeResponse, tags=["native"])
    async def attribute_pass(body: AttributeRequest) -> AttributeResponse:
        """Gradients of an objective (a token's logit or logprob, the loss) w.r.t. activations, and act x grad."""
        ids = server.tokenize(body.prompt, "prompt")
        server.check_lengths(len(ids), 0, "prompt", "prompt")
        edits = server.interventions(body.interventions, [len(ids)], generating=False)
        for i, hook in enumerate(body.hooks):
            try:
                server.hook_width(hook, "hook")
            except ValueError as error:
                raise RequestError(400, f"hooks[{i}]", str(error)) from None
        token = body.objective.token
        vocab = server.lm.model.config.vocab_size
        if any(t >= vocab for t in (token if isinstance(token, list) else [token] if token is not None else [])):
            raise RequestError(400, "objective.token", f"token ids must be below the vocabulary size {vocab}")
        if isinstance(body.objective.position, int) and not -len(ids) <= body.objective.position < len(ids):
            raise RequestError(400, "objective.position", f"position {body.objective.position} is outside the "
                               f"prompt of {len(ids)} tokens")
        batch = _right_padded([ids], server.lm.model.device)

        def run() -> Any:
            return attribute(server.lm.model, batch, body.hooks, body.objective, interventions=[edits],
                             saes=server.saes)

        result = await admitted(lambda: on_engine(run))
        return AttributeResponse(tokens=ids, objective=float(result.objective[0]), hooks={
            h: HookAttribution(attribution=result.attribution[h][0].tolist(),
                               gradient_norm=result.gradients[h][0].float().norm(dim=-1).tolist())
            for h in body.hooks})

    @api.get("/v1/hook_points", response_model=list[HookPointInfo], tags=["native"])
    async def list_hook_points() -> list[HookPointInfo]:
        return [HookPointInfo(name=name, shape=list(shape), dtype=str(server.lm.model.dtype).removeprefix("torch."))
                for name, shape in server.widths.items()]

    @api.get("/v1/saes", response_model=list[SAEInfo], tags=["native"])
    async def list_saes() -> list[SAEInfo]:
        return [SAEInfo(name=name, hook=server.sae_hooks[name], d_in=sae.d_in, d_sae=server.sae_widths[name])
                for name, sae in server.saes.items()]

    def vector_info(v: Any) -> VectorInfo:
        return VectorInfo(id=v.id, name=v.name, hook=v.hook, width=len(v.values), norm=v.norm, source=v.source)

    @api.get("/v1/vectors", response_model=list[VectorInfo], tags=["native"])
    async def list_vectors() -> list[VectorInfo]:
        return [vector_info(v) for v in server.vectors.values()]

    @api.post("/v1/vectors", response_model=VectorInfo, status_code=201, tags=["native"])
    async def upload_vector(body: VectorUpload) -> VectorInfo:
        """Register a steering vector; its id is a hash of its content and hook (the same upload, the same id)."""
        try:
            return vector_info(server.register_vector(body.vector, body.hook, body.name, "upload"))
        except ValueError as error:
            raise RequestError(400, "vector", str(error)) from None

    @api.delete("/v1/vectors/{vector_id}", status_code=204, tags=["native"])
    async def delete_vector(vector_id: str) -> Response:
        vector = server.vectors.get(vector_id)
        if vector is None:
            raise RequestError(404, "vector_id", f"no uploaded vector {vector_id!r}")
        if vector.source == "spec":
            raise RequestError(400, "vector_id", "vectors from the service spec cannot be deleted")
        server.vectors.pop(vector_id, None)
        return Response(status_code=204)

    # -- OpenAI-compatible API ------------------------------------------------------------------------------------

    @api.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0,
                                            "owned_by": "interp-operator"}]}

    async def openai_run(http: Request, body: Any, prompts: list[str], field_name: str, max_new: int,
                         logprobs: int | None,
                         chunk: Callable[[int, TokenEvent], dict[str, Any]],
                         final: Callable[[list[list[TokenEvent]], list[list[int]]], dict[str, Any]]) -> Any:
        ids, edits = prepare(prompts, max_new, body.interventions, field_name, "max_tokens")
        rows = [row for row in ids for _ in range(body.n)]
        params = sampling(body, max_new, logprobs)
        if not body.stream:
            async def run() -> dict[str, Any]:
                results = await asyncio.gather(*(collect(http, row, _seeded(params, i), edits)
                                                 for i, row in enumerate(rows)))
                return final(list(results), rows)

            return await admitted(run)
        server.admit()

        async def stream() -> AsyncIterator[bytes]:
            try:
                deadline = time.monotonic() + limits.request_timeout_seconds
                merged: asyncio.Queue[tuple[int, TokenEvent]] = asyncio.Queue()

                async def pump(index: int, row: list[int]) -> None:
                    async for event in events(row, _seeded(params, index), edits):
                        await merged.put((index, event))

                tasks = [asyncio.ensure_future(pump(i, row)) for i, row in enumerate(rows)]
                open_rows = len(rows)
                try:
                    while open_rows:
                        left = deadline - time.monotonic()
                        try:
                            index, event = await asyncio.wait_for(merged.get(), max(left, 0.001))
                        except TimeoutError:
                            metrics.rejections.labels("timeout").inc()
                            error = {"error": {"message": "request timed out", "type": "timeout", "code": 504}}
                            yield f"data: {json.dumps(error)}\n\n".encode()
                            return
                        if event.finish_reason is not None:
                            open_rows -= 1
                        yield f"data: {json.dumps(chunk(index, event))}\n\n".encode()
                    yield b"data: [DONE]\n\n"
                finally:
                    for task in tasks:
                        task.cancel()
            finally:
                server.release()

        return ClosingStreamingResponse(stream(), media_type="text/event-stream")

    def usage(results: list[list[TokenEvent]], rows: list[list[int]]) -> dict[str, int]:
        prompt = sum(len(r) for r in rows)
        completion = sum(1 for evs in results for e in evs if e.token is not None)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def finish(reason: str | None) -> str | None:
        return None if reason is None else "length" if reason == "length" else "stop"

    @api.post("/v1/completions", tags=["openai"])
    async def completions(body: CompletionRequest, http: Request) -> Any:
        """OpenAI-compatible text completion; the extra ``interventions`` field edits this request's rows."""
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        max_new = default_new_tokens(body.max_tokens)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        decode = server.lm.tokenizer.decode

        def lp(evs: list[TokenEvent]) -> dict[str, Any] | None:
            if body.logprobs is None:
                return None
            toks = [e for e in evs if e.token is not None]
            return {"tokens": [decode([e.token]) for e in toks], "token_logprobs": [e.logprob for e in toks],
                    "top_logprobs": [{decode([k]): v for k, v in (e.top_logprobs or {}).items()} for e in toks],
                    "text_offset": []}

        def chunk(index: int, event: TokenEvent) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": server.model_name,
                    "choices": [{"index": index, "text": event.text, "logprobs": lp([event]),
                                 "finish_reason": finish(event.finish_reason)}]}

        def final(results: list[list[TokenEvent]], rows: list[list[int]]) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": server.model_name,
                    "choices": [{"index": i, "text": "".join(e.text for e in evs), "logprobs": lp(evs),
                                 "finish_reason": finish(evs[-1].finish_reason)} for i, evs in enumerate(results)],
                    "usage": usage(results, rows)}

        return await openai_run(http, body, prompts, "prompt", max_new, body.logprobs, chunk, final)

    @api.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatRequest, http: Request) -> Any:
        """OpenAI-compatible chat completion; the extra ``interventions`` field edits this request's rows."""
        prompt = _chat_prompt(server.lm.tokenizer, [m.model_dump() for m in body.messages])
        max_new = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_new = default_new_tokens(max_new)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        decode = server.lm.tokenizer.decode

        def lp(evs: list[TokenEvent]) -> dict[str, Any] | None:
            if logprobs is None:
                return None
            return {"content": [{"token": decode([e.token]), "logprob": e.logprob, "bytes": None,
                                 "top_logprobs": [{"token": decode([k]), "logprob": v, "bytes": None}
                                                  for k, v in (e.top_logprobs or {}).items()]}
                                for e in evs if e.token is not None]}

        def chunk(index: int, event: TokenEvent) -> dict[str, Any]:
            delta = {"role": "assistant", "content": event.text} if event.token is not None or event.text else {}
            return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": server.model_name,
                    "choices": [{"index": index, "delta": delta, "logprobs": lp([event]),
                                 "finish_reason": finish(event.finish_reason)}]}

        def final(results: list[list[TokenEvent]], rows: list[list[int]]) -> dict[str, Any]:
            return {"id": ident, "object": "chat.completion", "created": created, "model": server.model_name,
                    "choices": [{"index": i, "message": {"role": "assistant", "content": "".join(e.text for e in evs)},
                                 "logprobs": lp(evs), "finish_reason": finish(evs[-1].finish_reason)}
                                for i, evs in enumerate(results)],
                    "usage": usage(results, rows)}

        return await openai_run(http, body, [prompt], "messages", max_new, logprobs, chunk, final)

    # -- health and metrics ---------------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Live: the process answers (the engine thread is alive)."""
        alive = server.worker is None or server.worker.alive
        if not alive:
            return JSONResponse({"status": "engine thread stopped"}, 503)  # type: ignore[return-value]
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        """Ready once the model, the SAEs and the named vectors are loaded."""
        if not server.ready:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.include_router(api)
    return app


def _seeded(params: SamplingParams, index: int) -> SamplingParams:
    """The n-th choice of a request with a seed draws from its own stream (seed + n), reproducibly."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=params.seed + index)


def _right_padded(rows: list[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _summary(x: torch.Tensor) -> TokenSummary:
    x = x.float().flatten(1)
    return TokenSummary(norm=x.norm(dim=-1).tolist(), mean=x.mean(-1).tolist(), max_abs=x.abs().amax(-1).tolist())


def _chat_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The model's own chat template when it has one, else plain ``role: content`` lines."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
    return "\n".join([*lines, "assistant:"])

