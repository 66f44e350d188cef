"""``inferledger replay azure-trace``: a real trace replayed on a described fleet, as a feed.

The requests of an Azure LLM inference trace (CSV: ``TIMESTAMP``, ``ContextTokens``,
``GeneratedTokens``) are placed on the nodes of a fleet description with the service-time model
of :mod:`services.ingest.trace.fleet` (admitted at arrival, time to first token ``0.02 s +
uncached_prompt_tokens / prefill_tps``, then ``completion_tokens / decode_tps``), and sent in the
order a fleet reports them: when each request finishes. Tenant, model, node, cache hits and
status come from a seeded hash of the row number, so the same trace, fleet and seed always give
the same events, byte for byte.

``speed`` paces the feed: 1 sends in real time, 60 sends an hour of trace in a minute, 0 sends
as fast as the broker takes it. Event timestamps stay the trace's own (optionally shifted as a
whole, e.g. to now); pacing never compresses service times, so costs do not depend on speed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from services.contracts import InferenceEvent, dumps
from services.ingest.emitter import Emitter
from services.ingest.trace.azure import read_trace
from services.ingest.trace.fleet import Fleet, in_finish_order, rates, rental_start, simulate
from services.runtime.config import RATES, Settings
from services.runtime.kafka import make_producer


@dataclass
class ReplaySummary:
    events: int = 0
    rates: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[str] = field(default_factory=Counter)
    first_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    wall_seconds: float = 0.0
    emitter: dict[str, int] = field(default_factory=dict)

    def add(self, event: InferenceEvent) -> None:
        self.events += 1
        self.by_status[event.status] += 1
        self.by_resource[event.resource_id] += 1
        if self.first_started_at is None or event.started_at < self.first_started_at:
            self.first_started_at = event.started_at
        if self.last_finished_at is None or event.finished_at > self.last_finished_at:
            self.last_finished_at = event.finished_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "rates": self.rates,
            "by_status": dict(sorted(self.by_status.items())),
            "resources": len(self.by_resource),
            "first_started_at": _iso(self.first_started_at),
            "last_finished_at": _iso(self.last_finished_at),
            "wall_seconds": round(self.wall_seconds, 3),
            **({"emitter": self.emitter} if self.emitter else {}),
        }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def default_id_prefix(trace: Path, fleet: Fleet, shift: timedelta) -> str:
    """Event ids name the trace, the seed and the shift: replaying the same again is idempotent
    (the pipeline drops the duplicates), while another seed or start gives new events."""
    prefix = f"{trace.stem[:48]}.{fleet.seed[:32]}"
    if shift:
        prefix += f".{int(shift.total_seconds())}"
    return prefix


def trace_events(
    fleet: Fleet,
    trace: Path,
    limit: int | None = None,
    shift: timedelta = timedelta(0),
    id_prefix: str | None = None,
) -> Iterator[InferenceEvent]:
    """The fleet's events in finish order, every timestamp moved by ``shift``."""
    prefix = id_prefix or default_id_prefix(trace, fleet, shift)
    events = in_finish_order(simulate(fleet, trace, limit, prefix))
    if not shift:
        yield from events
        return
    for e in events:
        yield e.model_copy(
            update={
                "started_at": e.started_at + shift,
                "first_token_at": None if e.first_token_at is None else e.first_token_at + shift,
                "finished_at": e.finished_at + shift,
            }
        )


def paced(
    events: Iterable[InferenceEvent],
    speed: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[InferenceEvent]:
    """Each event when its ``finished_at`` comes on a clock running ``speed`` times real time,
    counted from the first event (``speed`` 0: no waiting)."""
    origin: tuple[datetime, float] | None = None
    for event in events:
        if speed > 0:
            if origin is None:
                origin = (event.finished_at, clock())
            due = origin[1] + (event.finished_at - origin[0]).total_seconds() / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        yield event


def scan(trace: Path, limit: int | None = None) -> tuple[int, datetime | None]:
    """How many requests the replay will send, and the first arrival (checks the whole file
    before anything is sent)."""
    n, first = 0, None
    for arrival, _, _ in read_trace(trace, limit):
        n += 1
        if first is None or arrival < first:
            first = arrival
    return n, first


def publish_rates(settings: Settings, fleet: Fleet, start: datetime) -> int:
    """One open-ended list-price rate per node from ``start`` (the rental's beginning)."""
    producer = make_producer(settings)
    try:
        fleet_rates = rates(fleet, start, None)
        for rate in fleet_rates:
            producer.send(settings.topic(RATES), key=rate.resource_id, value=dumps(rate))
        producer.flush(60)
    finally:
        producer.close(10)
    return len(fleet_rates)


def to_kafka(
    settings: Settings,
    events: Iterable[InferenceEvent],
    summary: ReplaySummary,
    on_event: Callable[[], None] = lambda: None,
) -> None:
    """Send through the emitter SDK, waiting for room instead of dropping (a replay may block)."""
    emitter = Emitter(settings, source="replay")
    try:
        for event in events:
            emitter.record(event, block=True)
            summary.add(event)
            on_event()
    finally:
        emitter.close(timeout=120)
        summary.emitter = dict(emitter.stats)


def to_file(
    out: IO[bytes],
    events: Iterable[InferenceEvent],
    summary: ReplaySummary,
    on_event: Callable[[], None] = lambda: None,
) -> None:
    """Events as JSONL (the form ``inferledger ingest events`` reads)."""
    for event in events:
        out.write(dumps(event) + b"\n")
        summary.add(event)
        on_event()


__all__ = [
    "ReplaySummary",
    "default_id_prefix",
    "paced",
    "publish_rates",
    "rental_start",
    "scan",
    "to_file",
    "to_kafka",
    "trace_events",
]
