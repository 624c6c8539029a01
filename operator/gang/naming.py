"""Deterministic names and labels of everything the operator creates for an object.

Names derive from the object's name (at most 48 characters, enforced by the CRDs) so that GitOps tools and
re-running reconciles always arrive at the same objects: pods ``<name>-<attempt>-<rank>`` (at most 58 characters, a
valid hostname), the headless Service ``<name>``, the config ConfigMap ``<name>-config``.
"""

from __future__ import annotations

GROUP = "interp.dev"
LABEL_NAME = f"{GROUP}/name"
LABEL_KIND = f"{GROUP}/kind"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_RANK = f"{GROUP}/rank"
LABEL_REVISION = f"{GROUP}/revision"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "interp-operator"
PROFILE_ANNOTATION = f"{GROUP}/profile-steps"


def pod_name(name: str, attempt: int, rank: int) -> str:
    return f"{name}-{attempt}-{rank}"


def service_name(name: str) -> str:
    return name


def config_map_name(name: str) -> str:
    return f"{name}-config"


def selector_labels(kind: str, name: str) -> dict[str, str]:
    """Labels that select every pod of one object, whatever the attempt."""
    return {LABEL_KIND: kind, LABEL_NAME: name}


def pod_labels(kind: str, name: str, attempt: int, rank: int) -> dict[str, str]:
    return selector_labels(kind, name) | {
        LABEL_ATTEMPT: str(attempt),
        LABEL_RANK: str(rank),
        LABEL_MANAGED_BY: MANAGER,
    }


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
