"""kopf handlers: thin wrappers that call the pure functions and write one status patch per reconcile."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from .admission import admission_status
from .api import GROUP, KINDS, VERSION, KindInfo
from .metrics import INVALID_SPECS, RECONCILE_SECONDS

# Explicit timeouts: without them a silently dropped watch connection leaves the operator deaf until restarted.
WATCH_SERVER_TIMEOUT_S = 120
WATCH_CLIENT_TIMEOUT_S = 150
REQUEST_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    # kopf's bookkeeping goes to annotations: the status schema is closed, so a status.kopf field would be pruned.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are posted deliberately (one per transition), not for every log line of a handler.
    settings.posting.level = logging.WARNING


def _register(info: KindInfo) -> None:
    def admit(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        with RECONCILE_SECONDS.labels(info.kind).time():
            status = admission_status(info, dict(body), datetime.now(UTC))
        patch.status.update(status)
        accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
        if accepted["status"] == "False":
            INVALID_SPECS.labels(info.kind).inc()
            kopf.warn(body, reason=accepted["reason"], message=accepted["message"])

    for register in (kopf.on.resume, kopf.on.create):
        register(GROUP, VERSION, info.plural, id="admit")(admit)
    kopf.on.update(GROUP, VERSION, info.plural, id="admit", field="spec")(admit)


for _info in KINDS:
    _register(_info)
