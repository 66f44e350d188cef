"""The attribution step under faults: offsets it lets Kafka commit, tombstones, wrong clocks."""

from __future__ import annotations

import json

from services.attribution.processor import AttributionProcessor
from services.runtime.config import Settings
from tests.helpers import SAMPLE_EVENT

EVENT = SAMPLE_EVENT


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


def at(event_id: str, start: str, finish: str) -> bytes:
    return raw(dict(EVENT, event_id=event_id, started_at=start, finished_at=finish))


def test_the_committed_offset_never_passes_a_held_message():
    """Offset 0 holds an event of a later bucket than offset 1's. Once offset 1's bucket has
    closed, offset 1 is released before offset 0: the offset Kafka may commit stays at 0 (faust's
    own commit, from acknowledged offsets, went to 2 and a restart lost offset 0's event)."""
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_events(at("late-bucket", "2024-01-01T00:02:00Z", "2024-01-01T00:02:30Z"), "m0", 0, 0)
    proc.on_events(at("early", "2024-01-01T00:00:00Z", "2024-01-01T00:00:30Z"), "m1", 0, 1)
    proc.on_events(at("later", "2024-01-01T00:01:05Z", "2024-01-01T00:01:10Z"), "m2", 0, 2)
    out = proc.step({0}, set())
    assert "m1" in out.release and "m0" not in out.release
    assert out.commit == {0: 0}  # never past offset 0, still held
    # once everything is released, the offset moves past all of it
    proc.on_events(at("much-later", "2024-01-01T00:05:00Z", "2024-01-01T00:05:10Z"), "m3", 0, 3)
    out = proc.step({0}, set())
    assert "m0" in out.release and out.commit == {0: 3}  # m3 is held now


def test_commit_offsets_are_offered_again_after_a_failed_commit():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_events(b"{broken", "bad", 2, 7)
    out = proc.step({2}, set())
    assert out.commit == {2: 8}
    assert proc.step({2}, set()).commit == {}  # nothing new
    proc.uncommitted(out.commit)
    assert proc.step({2}, set()).commit == {2: 8}


def test_a_tombstone_is_counted_and_skipped_not_a_crash():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    proc.on_events(None, "tomb", 0, 0)
    proc.on_events(raw(EVENT), "m1", 0, 1)
    out = proc.step({0}, set())
    assert proc.counters["tombstones"] == 1
    assert "tomb" in out.release and out.dead_letters == []
    assert out.commit == {0: 1}  # the tombstone is passed, the held event is not


def test_an_event_from_the_future_is_dead_lettered_and_does_not_move_the_watermark():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0, max_future_seconds=300))
    proc.wall_clock = lambda: 1704067260.0  # 2024-01-01T00:01:00Z
    proc.on_events(raw(EVENT), "m1", 0, 0)
    batch = {
        "resource_id": "node-1",
        "events": [
            dict(
                EVENT,
                event_id="from-2030",
                started_at="2030-01-01T00:00:00Z",
                finished_at="2030-01-01T00:00:01Z",
            ),
            dict(
                EVENT,
                event_id="year-9999",
                started_at="9999-12-31T00:00:00Z",
                finished_at="9999-12-31T00:00:01Z",
            ),
            dict(
                EVENT,
                event_id="just-in-time",
                started_at="2024-01-01T00:05:00Z",
                finished_at="2024-01-01T00:05:59Z",  # 299 s after the clock: accepted
            ),
        ],
    }
    proc.on_events(raw(batch), "m2", 0, 1)
    out = proc.step({0}, set())
    reasons = sorted(json.loads(v)["reason"] for _, v in out.dead_letters)
    assert reasons == ["future_event", "invalid_event"]  # 9999 is past the calendar's edge
    assert proc.counters["events.accepted"] == 2
    assert proc.watermark_us({0}) == 1704067559 * 1_000_000  # 00:05:59, not 2030
    # a valid event a few minutes old is still on time, not "too late"
    proc.on_events(at("on-time", "2024-01-01T00:04:00Z", "2024-01-01T00:04:10Z"), "m3", 0, 2)
    assert proc.counters["events.too_late"] == 0


def test_a_message_keyed_by_another_resource_is_rerouted_not_accounted():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0))
    batch = {"resource_id": "node-1", "events": [dict(EVENT, event_id="b1")]}
    proc.on_events(raw(EVENT), "wrong-key", 0, 0, key=b"node-2")
    proc.on_events(raw(batch), "no-key", 0, 1, key=None)
    proc.on_events(raw(dict(EVENT, event_id="e2")), "right", 0, 2, key=b"node-1")
    out = proc.step({0}, set())
    assert proc.counters["events.rerouted"] == 2
    assert proc.counters["events.accepted"] == 1  # only the correctly keyed one, here
    assert [k for k, _ in out.reroutes] == ["node-1", "node-1"]
    assert json.loads(out.reroutes[0][1])["event_id"] == "e1"  # the bytes as they came
    assert {"wrong-key", "no-key"} <= set(out.release)
    # published again under the right key, it is accounted (by whoever owns node-1)
    proc.on_events(out.reroutes[0][1], "again", 0, 3, key=b"node-1")
    assert proc.counters["events.accepted"] == 2


def test_a_bounded_run_waits_for_the_end_markers_written_after_a_reroute():
    """The re-routed copy lands after the end markers already on the topic. Old markers still
    unread must not let the run finish before the copy is read: only markers of the new id,
    written after the copy, drain the events topic (a CI run once finished without it)."""
    from services.contracts import EndOfInput, dumps

    proc = AttributionProcessor(Settings(allowed_lateness_seconds=0), run_id="run-1")
    old = dumps(EndOfInput(run_id="run-1"))
    proc.on_events(old, "mk1", 1, 0, key=None)  # partition 1 is drained
    proc.on_events(raw(EVENT), "wrong", 0, 0, key=b"other")  # re-routed: lands after markers
    out = proc.step({0, 1}, set())
    assert proc.counters["events.rerouted"] == 1 and out.remark is not None
    proc.on_events(old, "mk0", 0, 1, key=None)  # partition 0's old marker, read after
    assert not proc.drained(proc.events_topic, {0})  # the copy may still be on its way
    new = dumps(EndOfInput(run_id=out.remark))
    proc.on_events(new, "mk0-new", 0, 2, key=None)
    proc.on_events(new, "mk1-new", 1, 1, key=None)
    assert proc.drained(proc.events_topic, {0, 1})
