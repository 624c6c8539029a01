"""What the serving engine's tests share."""

from __future__ import annotations

from interp_workloads.serve.engine import TokenEvent


class Collector:
    """A request's on_event: the events the engine sent it, in order."""

    def __init__(self) -> None:
        self.events: list[TokenEvent] = []

    def __call__(self, event: TokenEvent) -> None:
        self.events.append(event)

    @property
    def tokens(self) -> list[int]:
        return [e.token for e in self.events if e.token is not None]

    @property
    def logprobs(self) -> list[dict[int, float]]:
        return [e.top_logprobs or {} for e in self.events if e.token is not None]
