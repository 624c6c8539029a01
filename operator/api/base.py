"""Building blocks shared by every API model: camelCase JSON, docstring descriptions, CEL rules.

The pydantic models in this package are the single source of truth for the CRDs. Each field's docstring becomes its
OpenAPI ``description`` (``kubectl explain`` text). Cross-field rules are written once, in CEL, with :func:`cel`; the
CRD generator copies them into ``x-kubernetes-validations`` for the API server, and :class:`ApiModel` evaluates the same
expressions in Python, so the operator and the standalone workloads reject exactly what the API server rejects.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel, to_snake

# Carried on an annotation so the CRD generator can emit ``x-kubernetes-int-or-string`` instead of an anyOf.
INT_OR_STRING_MARK = "x-kubernetes-int-or-string"

IntOrString = Annotated[
    int | str,
    Field(json_schema_extra={INT_OR_STRING_MARK: True}),
]
"""A Kubernetes int-or-string value, such as a resource quantity (``4``, ``"16Gi"``) or a percentage (``"25%"``)."""

RESOURCE_QUANTITY_PATTERN = (r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                             r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
"""Kubernetes' quantity format without a minus sign: what a resource request or limit may be (the same pattern as
``interp_operator.quantity.QUANTITY_PATTERN``, which also accepts negative quantities)."""


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and (len(value) > 64 or not re.match(RESOURCE_QUANTITY_PATTERN, value)):
        raise ValueError(f"{value!r} is not a resource quantity (such as 8, 500m, 64Gi)")
    return value


ResourceQuantity = Annotated[
    int | str,
    Field(json_schema_extra={INT_OR_STRING_MARK: True, "pattern": RESOURCE_QUANTITY_PATTERN, "maxLength": 64}),
    AfterValidator(_check_quantity),
]
"""A non-negative resource quantity (``8``, ``"500m"``, ``"64Gi"``): the pattern on strings is in the CRD schema
and checked here; a negative integer is refused by a CEL rule of the model holding the quantities."""

PERCENT_PATTERN = r"^(100|[1-9]?[0-9])%$"


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, str) and not re.match(PERCENT_PATTERN, value):
        raise ValueError(f"{value!r} is neither a whole number nor a percentage from 0% to 100%")
    return value


IntOrPercent = Annotated[
    int | str,
    Field(json_schema_extra={INT_OR_STRING_MARK: True, "pattern": PERCENT_PATTERN}),
    AfterValidator(_check_int_or_percent),
]
"""A count or a percentage of replicas, as a rollout's maxSurge/maxUnavailable: ``1`` or ``"25%"``, at most 100%."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


@dataclass(frozen=True)
class CelRule:
    """A CEL ``x-kubernetes-validations`` rule evaluated against the JSON of the object it is attached to."""

    rule: str
    message: str
    field_path: str | None = None


def cel(rule: str, message: str, field_path: str | None = None) -> CelRule:
    return CelRule(rule=rule, message=message, field_path=field_path)


@functools.cache
def _program(rule: str) -> Any:
    # Imported lazily: compiling CEL costs ~0.1 s per rule, paid once per rule per process.
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def evaluate_cel(rule: str, document: Any) -> bool:
    """Evaluate one rule with ``self`` bound to ``document`` (plain JSON); raise on evaluation errors."""
    import celpy

    result = _program(rule).evaluate({"self": celpy.json_to_cel(document)})
    if isinstance(result, Exception):
        raise result
    return bool(result)


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extras for a list that server-side apply merges by ``keys`` (GitOps tools edit items in place)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected, CEL rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=False,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        # Carry the CEL rules and the API server's defaults into the JSON schema the CRDs are generated from.
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        rules = cls.all_cel_rules()
        if rules:
            target["x-kubernetes-validations"] = [
                {"rule": r.rule, "message": r.message} | ({"fieldPath": r.field_path} if r.field_path else {})
                for r in rules
            ]
        for name, field in cls.model_fields.items():
            prop = target.get("properties", {}).get(field.alias or name)
            if prop is None:
                continue
            prop.pop("default", None)
            if not field.is_required():
                default = server_default(field.get_default(call_default_factory=True))
                if default is not None:
                    prop["default"] = default
        return json_schema

    @classmethod
    def all_cel_rules(cls) -> tuple[CelRule, ...]:
        """This model's rules and those of the API models it extends, base classes first."""
        rules: list[CelRule] = []
        for klass in reversed(cls.__mro__):
            rules.extend(klass.__dict__.get("cel_rules", ()))
        return tuple(rules)

    @model_validator(mode="after")
    def _check_list_map_keys(self) -> ApiModel:
        # The API server rejects duplicate keys in x-kubernetes-list-type: map lists; so do the models.
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra
            if not isinstance(extra, dict) or extra.get("x-kubernetes-list-type") != "map":
                continue
            keys = [str(k) for k in extra["x-kubernetes-list-map-keys"]]  # type: ignore[union-attr]
            seen: set[tuple] = set()
            for item in getattr(self, name) or ():
                key = tuple(getattr(item, to_snake(k)) for k in keys)
                if key in seen:
                    shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
                    raise ValueError(f"{field.alias or name}: duplicate entry with {shown}")
                seen.add(key)
        return self

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        rules = self.all_cel_rules()
        if rules:
            document = self.to_json_dict()
            for rule in rules:
                try:
                    holds = evaluate_cel(rule.rule, document)
                except Exception as err:  # the API server also reports a rule that fails to evaluate as invalid
                    raise ValueError(f"{rule.message} (rule {rule.rule!r} failed: {err})") from err
                if not holds:
                    raise ValueError(rule.message)
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The object as the API server stores it after defaulting: camelCase keys, unset fields and empty
        collections omitted (the CRDs default no field to an empty list or map, to keep stored objects minimal)."""
        return drop_empty(self.model_dump(mode="json", by_alias=True, exclude_none=True))


MAX_NAME_LENGTH = 48


class Resource(ApiModel):
    """A custom resource as stored by the API server: apiVersion, kind, metadata, spec and status."""

    cel_rules = (
        cel(
            f"!has(self.metadata.name) || size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters: pod and service names are derived from it",
        ),
    )

    api_version: str = "interp.dev/v1alpha1"
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)


def server_default(value: Any) -> Any:
    """The default the API server should apply for a field whose model default is ``value``; None for no default.

    A nested model's default is written out in full: the API server checks a default against the object's CEL rules
    as written, without filling in nested defaults first, so ``default: {}`` would fail a rule such as
    ``self.backoffBaseSeconds <= self.backoffMaxSeconds``. Empty collections get no default (stored objects stay
    minimal).
    """
    if isinstance(value, ApiModel):
        return value.to_json_dict()
    if value is None or value == [] or value == {}:
        return None
    return drop_empty(value)


def drop_empty(value: Any) -> Any:
    """Recursively drop map entries whose value is an empty list or map."""
    if isinstance(value, dict):
        pruned = {k: drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v != [] and v != {}}
    if isinstance(value, list):
        return [drop_empty(v) for v in value]
    return value
