"""Object metadata helpers shared by the API semantics and the controllers."""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from .errors import Cause, field_error

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choices(_SUFFIX_ALPHABET, k=5))


def name_errors(name: str, label: bool) -> list[dict[str, Any]]:
    if label:
        if len(name) > 63 or not _LABEL.fullmatch(name):
            return [field_error(Cause.INVALID, "metadata.name", "a lowercase RFC 1123 label must consist of lower "
                                "case alphanumeric characters or '-', and must start and end with an alphanumeric "
                                "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
                                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')", name)]
        return []
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        return [field_error(Cause.INVALID, "metadata.name", "a lowercase RFC 1123 subdomain must consist of lower "
                            "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                            "character (e.g. 'example.com', regex used for validation is "
                            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')", name)]
    return []


def label_errors(meta: dict[str, Any]) -> list[dict[str, Any]]:
    errors = []
    for key, value in (meta.get("labels") or {}).items():
        _, _, short = key.rpartition("/")
        if not short or len(short) > 63 or not _QUALIFIED_NAME.fullmatch(short):
            errors.append(field_error(Cause.INVALID, "metadata.labels", "name part must consist of alphanumeric "
                                      "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                                      "character", key))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            errors.append(field_error(Cause.INVALID, "metadata.labels", "a valid label must be an empty string or "
                                      "consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                                      "with an alphanumeric character", value))
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            errors.append(field_error(Cause.TYPE, f"metadata.annotations.{key}", "must be a string", value))
    return errors
