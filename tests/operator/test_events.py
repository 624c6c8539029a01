"""Events as client-go's recorder posts them: reporting component and instance, an action, repeats folded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from interp_operator.events import COMPONENT, Recorder
from interp_operator.gang.lifecycle import Event

JOB = {"apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob",
       "metadata": {"name": "j", "namespace": "team", "uid": "u-1", "resourceVersion": "5"}}
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


class Events:
    def __init__(self, refuse: bool = False) -> None:
        self.stored: dict[str, dict] = {}
        self.refuse = refuse

    def post_event(self, namespace, body):
        if self.refuse:
            return None
        self.stored[body["metadata"]["name"]] = dict(body)
        return body["metadata"]["name"]

    def bump_event(self, namespace, name, count, last_timestamp):
        if name not in self.stored:
            return False
        self.stored[name] |= {"count": count, "lastTimestamp": last_timestamp}
        return True


def test_an_event_names_the_operator_its_pod_and_the_action():
    events = Events()
    Recorder(events, instance="interp-operator-7d9-x").record(JOB, Event("Normal", "GangCreated", "attempt 1"), T0)
    (posted,) = events.stored.values()
    assert posted["involvedObject"] == {"apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "name": "j",
                                        "namespace": "team", "uid": "u-1", "resourceVersion": "5"}
    assert (posted["reportingComponent"], posted["reportingInstance"], posted["source"]) == (
        COMPONENT, "interp-operator-7d9-x", {"component": COMPONENT})
    assert (posted["type"], posted["reason"], posted["message"], posted["action"], posted["count"]) == (
        "Normal", "GangCreated", "attempt 1", "CreatePods", 1)
    assert posted["firstTimestamp"] == posted["lastTimestamp"] == "2026-12-03T08:00:00Z"


def test_repeats_are_folded_into_one_event_and_a_different_message_is_its_own():
    events = Events()
    recorder = Recorder(events, instance="i")
    warn = Event("Warning", "InsufficientCapacity", "needs 4 GPUs in one rack")
    for minute in range(3):
        recorder.record(JOB, warn, T0 + timedelta(minutes=minute))
    recorder.record(JOB, Event("Warning", "InsufficientCapacity", "needs 2 GPUs in one rack"), T0)
    recorder.record({**JOB, "metadata": {**JOB["metadata"], "uid": "u-2"}}, warn, T0)  # another object
    counts = sorted((e["message"], e["involvedObject"]["uid"], e["count"]) for e in events.stored.values())
    assert counts == [("needs 2 GPUs in one rack", "u-1", 1), ("needs 4 GPUs in one rack", "u-1", 3),
                      ("needs 4 GPUs in one rack", "u-2", 1)]
    folded = next(e for e in events.stored.values() if e["count"] == 3)
    assert (folded["firstTimestamp"], folded["lastTimestamp"]) == ("2026-12-03T08:00:00Z", "2026-12-03T08:02:00Z")


def test_an_expired_event_is_posted_anew_and_a_refused_one_is_dropped():
    events = Events()
    recorder = Recorder(events, instance="i")
    recorder.record(JOB, Event("Normal", "GangRunning", "2 of 2 pods running"), T0)
    events.stored.clear()  # the API server's event TTL expired it
    recorder.record(JOB, Event("Normal", "GangRunning", "2 of 2 pods running"), T0)
    assert [e["count"] for e in events.stored.values()] == [1]
    refused = Events(refuse=True)
    Recorder(refused, instance="i").record(JOB, Event("Normal", "GangRunning", "x"), T0)
    assert refused.stored == {}
