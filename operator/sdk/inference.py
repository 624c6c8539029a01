"""A client of the inference server (``interp_workloads.serve``): generate with interventions, capture activations as
tensors, attribute, register steering vectors from tensors.

    from interp_workloads.spec import AddVector
    with InferenceClient.for_service(client, "pythia70m", token=...) as server:   # URL or port-forward
        out = server.generate("The capital of France is", interventions=[AddVector(hook="resid_post.3", vector=v)])
        acts = server.capture("Hello", hooks=["resid_post.3"])                     # {"resid_post.3": Tensor}

Requests are built and answers read with the server's own schemas (``interp_workloads.serve.schemas``), so a bad
request is refused here with the field named, and interventions are the same spec models the Python API and the
CRDs use. Only :meth:`capture` (tensors back) needs torch.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ValidationError

from .forward import PortForward, reachable
from .resources import format_validation_error

if TYPE_CHECKING:
    from .client import Client

DEFAULT_TIMEOUT_S = 120.0


class InferenceError(RuntimeError):
    """The server refused a request: ``status`` is the HTTP status, ``field`` the request field it blames."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"HTTP {status}{where}: {message}")
        self.status, self.message, self.field = status, message, field


def _schemas() -> Any:
    from interp_workloads.serve import schemas  # torch-free: pydantic models of the server's API

    return schemas


def as_floats(values: Any) -> list[float]:
    """A vector from a torch tensor, a numpy array or a sequence of numbers."""
    if hasattr(values, "detach"):  # torch: any dtype, any device
        if values.dim() != 1:
            raise ValueError(f"a vector must be one-dimensional, got shape {list(values.shape)}")
        values = values.detach().to("cpu").double()
    if hasattr(values, "tolist"):
        values = values.tolist()
    flat = list(values)
    if flat and isinstance(flat[0], list):
        raise ValueError(f"a vector must be one-dimensional, got rows of {len(flat[0])}")
    return [float(v) for v in flat]


def _dump(items: Iterable[Any]) -> list[Any]:
    return [item.model_dump(mode="json", exclude_none=True) if isinstance(item, BaseModel) else dict(item)
            for item in items]


class InferenceClient:
    """Speaks the server's HTTP API at ``url`` (with a bearer ``token`` unless the service disabled auth)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None, forward: PortForward | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.trust_env = False  # a cluster-local address must not go through a proxy from the environment
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._forward = forward

    @classmethod
    def for_service(cls, client: Client, name: str, *, namespace: str | None = None, token: str | None = None,
                    timeout: float = DEFAULT_TIMEOUT_S) -> InferenceClient:
        """A client of an InterpInferenceService: through its in-cluster URL when this machine reaches it, else
        through a port-forward to one of its ready pods (closed by :meth:`close` or the ``with`` block)."""
        service = client.get("iis", name, namespace=namespace)
        url = service.raw.get("status", {}).get("url")
        if url:
            parts = urlsplit(url)
            try:
                host = socket.gethostbyname(parts.hostname or "")
            except OSError:
                host = None
            if host and reachable(host, parts.port or 80):
                return cls(url, token=token, timeout=timeout)
        forward = client.port_forward("iis", name, namespace=namespace).start()
        return cls(forward.url, token=token, timeout=timeout, forward=forward)

    def close(self) -> None:
        if self._forward is not None:
            self._forward.stop()
            self._forward = None
        self.session.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        response = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
        if response.status_code >= 400:
            try:
                detail = response.json()
            except ValueError:
                raise InferenceError(response.status_code, response.text[:500]) from None
            message = detail.get("detail") if isinstance(detail, dict) else detail
            field = detail.get("field", "") if isinstance(detail, dict) else ""
            raise InferenceError(response.status_code, message if isinstance(message, str) else
                                 json.dumps(message), field or "")
        return response

    @staticmethod
    def _request(model: str, **fields: Any) -> dict[str, Any]:
        cls = getattr(_schemas(), model)
        try:
            request = cls.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as err:
            raise ValueError(f"{model}: {format_validation_error(err)}") from None
        return request.model_dump(mode="json", exclude_none=True)  # type: ignore[no-any-return]

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.5) -> None:
        """Block until the server has loaded its model (``/readyz`` answers 200); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = self.session.get(self.url + "/readyz", timeout=min(10.0, self.timeout))
            except requests.RequestException as err:
                last = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(interval)
        raise TimeoutError(f"{self.url} was not ready within {timeout}s ({last})")

    # -- the API ----------------------------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[str], *, interventions: Iterable[Any] = (),
                 max_new_tokens: int | None = None, **sampling: Any) -> Any:
        """Generations (``GenerateResponse``); ``interventions`` (spec models or dicts) apply to every prompt and
        every generated token; ``sampling``: temperature, top_p, top_k, seed, stop, logprobs, ignore_eos."""
        body = self._request("GenerateRequest", prompt=prompt if isinstance(prompt, str) else list(prompt),
                             interventions=_dump(interventions), max_new_tokens=max_new_tokens, **sampling)
        return _schemas().GenerateResponse.model_validate(self._call("POST", "/v1/generate", body).json())

    def forward(self, prompt: str | Sequence[str], *, hooks: Sequence[str] = (), interventions: Iterable[Any] = (),
                top_features: Sequence[Mapping[str, Any]] = ()) -> Any:
        """Per-token summaries at ``hooks``, top SAE features, next-token logprobs (``ForwardResponse``)."""
        body = self._request("ForwardRequest", prompt=prompt if isinstance(prompt, str) else list(prompt),
                             hooks=list(hooks), interventions=_dump(interventions),
                             top_features=[dict(t) for t in top_features], format="summary")
        return _schemas().ForwardResponse.model_validate(self._call("POST", "/v1/forward", body).json())

    def capture(self, prompt: str | Sequence[str], hooks: Sequence[str], *,
                interventions: Iterable[Any] = ()) -> dict[str, Any]:
        """Full activations as torch tensors: ``{hook: [batch, seq, d]}`` plus ``logits`` and ``attention_mask``
        (prompts are right-padded; the mask says which positions are real)."""
        from safetensors.torch import load

        body = self._request("ForwardRequest", prompt=prompt if isinstance(prompt, str) else list(prompt),
                             hooks=list(hooks), interventions=_dump(interventions), format="safetensors")
        tensors = load(self._call("POST", "/v1/forward", body).content)
        out = {name.removeprefix("activations."): t for name, t in tensors.items() if name.startswith("activations.")}
        out["logits"], out["attention_mask"] = tensors["logits"], tensors["attention_mask"]
        return out

    def attribute(self, prompt: str, hooks: Sequence[str], objective: Any, *,
                  interventions: Iterable[Any] = ()) -> Any:
        """Activation x gradient per token at ``hooks`` for ``objective`` (an ``Objective`` or a dict)."""
        if isinstance(objective, BaseModel):
            objective = objective.model_dump(mode="json", exclude_none=True)
        body = self._request("AttributeRequest", prompt=prompt, hooks=list(hooks), objective=objective,
                             interventions=_dump(interventions))
        return _schemas().AttributeResponse.model_validate(self._call("POST", "/v1/attribute", body).json())

    def register_vector(self, vector: Any, hook: str, name: str | None = None) -> Any:
        """Upload a steering vector (a tensor, array or list); returns its ``VectorInfo`` (``id`` is a content
        hash: the same upload gets the same id). Apply it with ``{"kind": "vector", "name": info.id}``."""
        body = self._request("VectorUpload", vector=as_floats(vector), hook=hook, name=name)
        return _schemas().VectorInfo.model_validate(self._call("POST", "/v1/vectors", body).json())

    def vectors(self) -> list[Any]:
        info = _schemas().VectorInfo
        return [info.model_validate(v) for v in self._call("GET", "/v1/vectors").json()]

    def delete_vector(self, vector_id: str) -> None:
        self._call("DELETE", f"/v1/vectors/{vector_id}")

    def hook_points(self) -> list[Any]:
        info = _schemas().HookPointInfo
        return [info.model_validate(h) for h in self._call("GET", "/v1/hook_points").json()]

    def saes(self) -> list[Any]:
        info = _schemas().SAEInfo
        return [info.model_validate(s) for s in self._call("GET", "/v1/saes").json()]
