"""The replay's ordering and pacing, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.contracts import InferenceEvent
from services.ingest.trace.fleet import Fleet, default_fleet, in_finish_order, simulate
from services.ingest.trace.replay import paced, rental_start

T0 = datetime(2023, 11, 16, 18, 0, tzinfo=UTC)


def event(n: int, start_ms: int, duration_ms: int) -> InferenceEvent:
    return InferenceEvent(
        event_id=f"e{n}",
        tenant_id="t",
        resource_id="r",
        model="m",
        engine="vllm",
        started_at=T0 + timedelta(milliseconds=start_ms),
        finished_at=T0 + timedelta(milliseconds=start_ms + duration_ms),
        prompt_tokens=1,
        completion_tokens=1,
        status="ok",
    )


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 5_000)), max_size=60))
def test_events_in_arrival_order_come_out_in_finish_order(rows):
    rows.sort()
    events = [event(n, s, d) for n, (s, d) in enumerate(rows)]
    out = list(in_finish_order(events))
    assert sorted(e.event_id for e in out) == sorted(e.event_id for e in events)
    assert [e.finished_at for e in out] == sorted(e.finished_at for e in events)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_pacing_follows_finish_times_at_the_speed_factor():
    events = [event(0, 0, 1000), event(1, 0, 3000), event(2, 5000, 5000)]  # finish 1 s, 3 s, 10 s
    clock = FakeClock()
    sent_at = []
    for _ in paced(events, 10, clock, clock.sleep):
        sent_at.append(round(clock.now - 100.0, 6))
    assert sent_at == [0.0, 0.2, 0.9]  # (finish - first finish) / 10
    clock = FakeClock()
    assert len(list(paced(events, 0, clock, clock.sleep))) == 3 and clock.sleeps == []


def test_simulation_is_deterministic_and_follows_the_fleet():
    fleet = Fleet.from_dict(default_fleet())
    a = list(simulate(fleet, limit=200))
    b = list(simulate(fleet, limit=200))
    assert a == b
    serves = {n.resource_id: n.models for n in fleet.nodes}
    assert all(e.model in serves[e.resource_id] for e in a)
    assert all(e.finished_at >= e.started_at for e in a)


def test_rental_starts_on_the_five_minute_step():
    assert rental_start(T0 + timedelta(minutes=7, seconds=3)) == T0 + timedelta(minutes=5)
