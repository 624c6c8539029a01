"""The server's settings, from the operator's cfg.json or from an InterpInferenceService manifest with local paths.

cfg.json is ``{"kind", "name", "namespace", "spec", "paths": {role: mount path}}`` (roles ``model``,
``saes/<name>``, ``vectors/<name>``); a manifest is the CR itself, whose storages are ``file://`` URIs or are
given as paths on the command line. Bearer tokens come from the file the pod has the auth Secret mounted at
(``INTERP_AUTH_TOKENS_FILE``, or ``--tokens-file``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from interp_operator.api.inferenceservice import InterpInferenceServiceSpec

from ..dump.config import ConfigError, storage_path
from .server import Limits

TOKENS_ENV = "INTERP_AUTH_TOKENS_FILE"


@dataclass(frozen=True)
class ServeConfig:
    name: str
    model: str
    dtype: str
    trust_remote_code: bool
    revision: str | None
    port: int
    limits: Limits
    tokens_file: Path | None
    """None: authentication is disabled (the spec says so explicitly)."""
    saes: dict[str, tuple[str, Path]] = field(default_factory=dict)
    vectors: dict[str, tuple[str | None, Path]] = field(default_factory=dict)


def parse(raw: dict[str, Any], *, overrides: dict[str, str] | None = None, tokens_file: str | None = None
          ) -> ServeConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
        raise ConfigError("the config must be an object with an InterpInferenceService 'spec'")
    try:
        spec = InterpInferenceServiceSpec.model_validate(raw["spec"])
    except ValidationError as err:
        raise ConfigError(f"invalid spec: {err}") from err
    paths = {**(raw.get("paths") or {}), **(overrides or {})}
    name = str(raw.get("name") or (raw.get("metadata") or {}).get("name") or "interp-serve")
    model = spec.model.hub_id or str(storage_path("model", spec.model.storage, paths))
    tokens: Path | None = None
    if not spec.auth.disabled:
        where = tokens_file or os.environ.get(TOKENS_ENV) or paths.get("auth")
        if not where:
            raise ConfigError(f"auth.secretName {spec.auth.secret_name!r} is set but no token file is mounted "
                              f"(${TOKENS_ENV} or --tokens-file)")
        tokens = Path(where)
        if not tokens.is_file():
            raise ConfigError(f"token file {tokens} does not exist")
    lim = spec.limits
    return ServeConfig(
        name=name, model=model, dtype=spec.model.dtype, trust_remote_code=spec.model.trust_remote_code,
        revision=spec.model.revision, port=spec.port, tokens_file=tokens,
        limits=Limits(max_batch_tokens=lim.max_batch_tokens, max_new_tokens=lim.max_new_tokens,
                      max_concurrent_requests=lim.max_concurrent_requests,
                      request_timeout_seconds=float(lim.request_timeout_seconds),
                      max_request_bytes=lim.max_request_bytes),
        saes={s.name: (s.hook_point, storage_path(f"saes/{s.name}", s.storage, paths)) for s in spec.saes},
        vectors={v.name: (v.hook_point, storage_path(f"vectors/{v.name}", v.storage, paths))
                 for v in spec.steering_vectors},
    )


def load(path: str | None, **kwargs: Any) -> ServeConfig:
    """A cfg.json, or a YAML manifest of an InterpInferenceService (its ``metadata.name`` names the server)."""
    path = path or os.environ.get("INTERP_CONFIG")
    if not path:
        raise ConfigError("no config: pass --config or set INTERP_CONFIG")
    try:
        text = Path(path).read_text()
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from err
    if isinstance(raw, dict) and raw.get("kind") not in (None, "InterpInferenceService"):
        raise ConfigError(f"{path}: kind {raw.get('kind')!r} is not an InterpInferenceService")
    return parse(raw, **kwargs)
