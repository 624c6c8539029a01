"""A Python SDK and the interpctl CLI for the three resources (no torch needed).

    from interp_operator.sdk import Client
    client = Client()                       # kubeconfig or in-cluster; Client(kubeconfig=...) for interp-local
    job = client.create(dump)               # a model from interp_operator.api, a dict, or YAML
    job.wait()                              # progress bar; JobFailed carries the reason
    store = job.results.open_store()        # the ActivationStore over the output (see Mounts)

Inference services: :mod:`interp_operator.sdk.inference`.
"""

from .client import Client, Handle, InferenceService, Job, WaitTimeout
from .resources import InvalidObject, load_objects, resolve_kind
from .results import Mounts, NotMounted, Results
from .status import JobFailed, describe
from .transport import ApiError, Connection, KubeTransport, NotFound, Transport

__all__ = [
    "ApiError",
    "Client",
    "Connection",
    "Handle",
    "InferenceService",
    "InvalidObject",
    "Job",
    "JobFailed",
    "KubeTransport",
    "Mounts",
    "NotFound",
    "NotMounted",
    "Results",
    "Transport",
    "WaitTimeout",
    "describe",
    "load_objects",
    "resolve_kind",
]
