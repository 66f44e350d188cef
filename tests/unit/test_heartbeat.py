"""Streaming: stamped end markers are heartbeats that close what was fed before them.

`run all --until-idle` beside a running `up` writes them; the attribution processor closes the
buckets before their time once the run's markers are on all its input partitions, and says so
(``Output.followed``) so that the markers are passed on to the ledger writer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.attribution.processor import AttributionProcessor
from services.contracts import CostAllocation, EndOfInput, decode_allocation, dumps
from services.contracts.markers import MAX_RUN_ID, heartbeat_coverage, heartbeat_ids
from services.runtime.config import Settings
from tests.helpers import SAMPLE_EVENT

EVENT = SAMPLE_EVENT
RATE = {  # finite: a heartbeat at now closes its buckets, and no idle ones after it
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
    "effective_to": "2024-01-01T00:02:00Z",
}
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def marker(run_id: str, at: datetime | None = NOW) -> bytes:
    return dumps(EndOfInput(run_id=run_id, at=at))


def fed() -> AttributionProcessor:
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=120))
    proc.wall_clock = NOW.timestamp
    proc.on_rate(raw(RATE), 0, 0)
    proc.on_events(raw(EVENT), "m1", 0, 0)
    out = proc.step({0, 1}, {0})
    assert out.allocations == [] and out.followed == []  # streaming: the watermark waits
    return proc


def test_a_heartbeat_on_every_input_partition_closes_what_came_before_and_is_passed_on():
    proc = fed()
    proc.on_events(marker("r1"), "k0", 0, 1)
    proc.on_rate(marker("r1"), 0, 1)
    out = proc.step({0, 1}, {0})
    assert out.allocations == [] and out.followed == []  # events partition 1 has not had it
    proc.on_events(marker("r1"), "k1", 1, 0)
    out = proc.step({0, 1}, {0})
    amounts: list[Decimal] = []
    for _, v in out.allocations:
        allocation = decode_allocation(v)
        assert isinstance(allocation, CostAllocation)  # no end-of-input marker among them
        amounts += [e.amount for e in allocation.entries]
    assert sum(amounts) == Decimal("1.2")  # 36/h for 2 min: both buckets, busy and idle
    assert out.followed == ["r1.0.3"]  # for events partitions 0 and 1 (bits 0b11)
    assert "m1" in out.release
    assert proc.step({0, 1}, {0}).followed == []  # once


def test_markers_without_a_time_from_the_future_or_with_overlong_ids_move_nothing():
    proc = fed()
    for run_id, at in (("old", None), ("ahead", NOW + timedelta(hours=1)), ("x" * 128, NOW)):
        proc.on_events(marker(run_id, at), "k0", 0, 1)
        proc.on_events(marker(run_id, at), "k1", 1, 0)
        proc.on_rate(marker(run_id, at), 0, 1)
    out = proc.step({0, 1}, {0})
    assert out.allocations == [] and out.followed == []
    assert proc.counters["markers.ignored"] == 6 and proc.counters["markers.future"] == 3


def test_a_bounded_run_does_not_read_other_runs_markers_as_heartbeats():
    proc = AttributionProcessor(Settings(allowed_lateness_seconds=120), run_id="mine")
    proc.wall_clock = NOW.timestamp
    proc.on_rate(raw(RATE), 0, 0)
    proc.on_events(raw(EVENT), "m1", 0, 0)
    proc.on_events(marker("other"), "k0", 0, 1)
    proc.on_rate(marker("other"), 0, 1)
    out = proc.step({0}, {0})
    assert out.allocations == [] and out.followed == [] and not out.finished


@given(st.sets(st.integers(min_value=0, max_value=65535), max_size=300), st.text(min_size=1))
def test_passed_on_ids_cover_exactly_the_workers_partitions(partitions, other):
    run_id = "0123456789abcdef0123456789abcdef"
    ids = heartbeat_ids(run_id, partitions) + heartbeat_ids("r" * MAX_RUN_ID, partitions)
    assert all(len(i) <= 128 for i in ids)
    assert set().union(*(heartbeat_coverage(i, run_id) for i in ids)) == partitions
    assert all(heartbeat_coverage(i, run_id + "x") == set() for i in ids)  # another run's
    assert heartbeat_coverage(other, run_id) == set() or other.startswith(run_id + ".")


def test_two_workers_markers_together_cover_the_topic():
    run_id = "r"
    halves = heartbeat_ids(run_id, {0, 2}) + heartbeat_ids(run_id, {1, 3})
    assert set().union(*(heartbeat_coverage(i, run_id) for i in halves)) == {0, 1, 2, 3}
