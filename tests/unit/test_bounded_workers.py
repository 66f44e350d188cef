"""A bounded run over several attribution workers, without Kafka: the end markers each worker
passes on name the events partitions it covers, a partition taken over is decided from its
committed offset, and what a worker reads after its flush is left to the next run."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from services.attribution.processor import AttributionProcessor, Output
from services.contracts import CostAllocation, decode_allocation
from services.contracts.markers import heartbeat_ids
from services.ledger.markers import not_covered
from services.runtime.config import Settings
from services.runtime.supervise import format_marker_offsets, parse_marker_offsets

RUN = "run-1"
MARKER = json.dumps({"type": "inferledger.control.end_of_input.v1", "run_id": RUN}).encode()
RATE = {
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
    "effective_to": "2024-01-01T00:05:00Z",
}


def event(event_id: str, minute: int, resource: str = "node-1") -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "tenant_id": "acme",
            "resource_id": resource,
            "model": "m",
            "engine": "vllm",
            "started_at": f"2024-01-01T00:{minute:02d}:00Z",
            "finished_at": f"2024-01-01T00:{minute:02d}:30Z",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "status": "ok",
        }
    ).encode()


def drained_reference(proc: AttributionProcessor, partitions: set[int]) -> None:
    """The run's markers on these rates and billing partitions (read again on every start)."""
    for p in partitions:
        proc.on_rate(MARKER, p, 1_000)
        proc.on_billing(MARKER, p, 1_000)


def counted(out: Output) -> set[str]:
    allocations = [decode_allocation(v) for _, v in out.allocations]
    return {e for a in allocations if isinstance(a, CostAllocation) for e, _ in a.counted_events}


def test_markers_of_several_workers_are_complete_only_when_they_cover_every_partition():
    events = {0, 1, 2, 3}
    first = [(p, m) for m in heartbeat_ids(RUN, {0, 2}) for p in (0, 1)]
    assert not_covered(first, RUN, {0, 1}, events) == {0, 1}
    second = [(p, m) for m in heartbeat_ids(RUN, {1, 3}) for p in (0, 1)]
    assert not_covered(first + second, RUN, {0, 1}, events) == set()
    # another run's markers, or a plain id, cover nothing; one allocation partition short
    other = [(p, m) for m in heartbeat_ids("run-2", {1, 3}) for p in (0, 1)] + [(0, RUN)]
    assert not_covered(first + other, RUN, {0, 1}, events) == {0, 1}
    assert not_covered(first + second[:1], RUN, {0, 1}, events) == {1}


@given(st.lists(st.frozensets(st.integers(0, 600), max_size=20), max_size=5), st.integers(1, 600))
def test_coverage_is_the_union_of_the_workers_partitions(workers, n):
    events = set(range(n))
    markers = [(0, m) for w in workers for m in heartbeat_ids(RUN, w)]
    union = set().union(*workers)
    assert (not_covered(markers, RUN, {0}, events) == set()) == (events <= union)


def test_marker_offsets_travel_on_the_command_line_and_back():
    offsets = {0: 12, 3: 0, 1: 40_000}
    assert format_marker_offsets(offsets) == "0:12,1:40000,3:0"
    assert parse_marker_offsets(format_marker_offsets(offsets)) == offsets
    assert parse_marker_offsets("") == {}
    for bad in ("0", "a:1", "0:-1"):
        try:
            parse_marker_offsets(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_a_partition_committed_past_its_marker_is_drained_without_reading_it_again():
    proc = AttributionProcessor(Settings(), run_id=RUN, marker_offsets={0: 7, 1: 9})
    drained_reference(proc, {0, 1})
    # partition 0: committed past its marker (another worker accounted for it and left);
    # partition 1: committed at the marker itself, so the marker is still to be read here
    assert proc.taken_over({0: 8, 1: 9}) == {0}
    assert proc.taken_over({2: 100}) == set()  # no marker offset known: read on
    out = proc.step({0, 1}, {0, 1}, {0, 1})
    assert not out.finished
    proc.on_events(event("e1", 0), "m1", 1, 9)
    proc.on_events(MARKER, "mk", 1, 10)
    out = proc.step({0, 1}, {0, 1}, {0, 1})
    assert out.finished and out.covers == {0, 1}
    assert counted(out) == {"e1"} and "m1" in out.release
    assert out.commit == {1: 11}


def test_a_partition_handed_over_forgets_its_marker_and_is_decided_again_when_it_returns():
    proc = AttributionProcessor(Settings(), run_id=RUN, marker_offsets={0: 5, 1: 5})
    drained_reference(proc, {0, 1})
    proc.on_events(event("e0", 0), "a", 0, 4)
    proc.on_events(MARKER, "mk0", 0, 5)
    assert not proc.step({0, 1}, {0, 1}, {0, 1}).finished  # partition 1 not drained
    proc.step({1}, {0, 1}, {0, 1})  # partition 0 went to another worker
    proc.step({0, 1}, {0, 1}, {0, 1})  # and came back: its marker must be read again
    assert proc.taken_over({0: 3}) == set()  # committed before the marker
    proc.on_events(event("e1", 1, "node-2"), "b", 1, 4)
    proc.on_events(MARKER, "mk1", 1, 5)
    assert not proc.step({0, 1}, {0, 1}, {0, 1}).finished
    proc.on_events(event("e0", 0), "a", 0, 4)
    proc.on_events(MARKER, "mk0", 0, 5)
    out = proc.step({0, 1}, {0, 1}, {0, 1})
    assert out.finished and out.covers == {0, 1}


def test_a_flushed_worker_given_an_undrained_partition_flushes_again_before_it_finishes():
    proc = AttributionProcessor(Settings(), run_id=RUN, marker_offsets={0: 1, 1: 1})
    drained_reference(proc, {0, 1})
    proc.on_events(event("e0", 0), "a", 0, 0)
    proc.on_events(MARKER, "mk0", 0, 1)
    out = proc.step({0}, {0, 1}, {0, 1})
    assert out.finished and out.covers == {0} and counted(out) == {"e0"}
    # a rebalance adds partition 1, committed before its marker: not finished until read
    assert proc.taken_over({1: 0}) == set()
    proc.on_events(event("e1", 1, "node-2"), "b", 1, 0)
    out = proc.step({0, 1}, {0, 1}, {0, 1})
    assert not out.finished and "b" not in out.release
    proc.on_events(MARKER, "mk1", 1, 1)
    out = proc.step({0, 1}, {0, 1}, {0, 1})
    assert out.finished and out.covers == {0, 1}
    assert counted(out) == {"e1"} and "b" in out.release


def test_what_a_finished_worker_reads_after_its_flush_is_not_released_nor_committed():
    """Input after the run's markers belongs to the next run: released here, its offset
    would be committed with its bucket still open, and the next run would never read it."""
    proc = AttributionProcessor(Settings(), run_id=RUN)
    drained_reference(proc, {0})
    proc.on_events(event("e0", 0), "a", 0, 0)
    proc.on_events(MARKER, "mk", 0, 1)
    out = proc.step({0}, {0}, {0})
    assert out.finished and out.commit == {0: 2}
    proc.on_events(event("e9", 9), "late-input", 0, 2)
    out = proc.step({0}, {0}, {0})
    assert out.finished  # it does not keep the run from ending
    assert "late-input" not in out.release and out.commit == {} and counted(out) == set()


def test_further_workers_take_metrics_ports_after_the_components():
    from services.runtime.config import component_listens
    from services.runtime.supervise import process_names

    assert process_names(Settings()) == ["attribution", "ledger", "alerts"]
    names = process_names(Settings(attribution_workers=3))
    assert names == ["attribution", "ledger", "alerts", "attribution-2", "attribution-3"]
    ports = component_listens("127.0.0.1:9100", names)
    assert ports["attribution"] == "127.0.0.1:9100" and ports["alerts"] == "127.0.0.1:9102"
    assert ports["attribution-3"] == "127.0.0.1:9104"
