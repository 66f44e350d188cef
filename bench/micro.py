"""The pipeline's own CPU per event, without Kafka or Postgres.

Feeds the benchmark workload straight into :class:`AttributionProcessor` (decode, accounting,
allocation messages) and the ledger writer's decode and row building, and prints microseconds
per event for each stage. ``--profile FILE`` writes a cProfile of the run. Use it to see what
a change to the hot path is worth before a full ``./dev bench`` run. ``--stages`` also times
decoding, building requests and adding them to the Book apart.
"""

from __future__ import annotations

import argparse
import cProfile
import time
from typing import Any

from bench.workload import Workload, encode_batches
from services.accounting import Book
from services.attribution.encode import to_request
from services.attribution.processor import AttributionProcessor
from services.attribution.settings import accounting_settings
from services.contracts import dumps
from services.contracts.fast import event_records
from services.contracts.models import GpuRate
from services.ledger.writer import LedgerDecoder
from services.runtime.config import Settings
from services.runtime.faustapp import tune_gc


class _Token:
    def ack(self) -> None:
        pass


def run(events: int, per_message: int, profile: str | None) -> dict[str, Any]:
    wl = Workload(events)
    resources = {r: i for i, r in enumerate(wl.resource_ids())}
    messages = [(resources[r], raw) for r, raw, _ in encode_batches(wl.generate(), per_message)]
    settings = Settings()
    tune_gc(settings)  # as the processors do
    proc = AttributionProcessor(settings)
    for i, r in enumerate(wl.rates()):
        proc.on_rate(dumps(GpuRate.model_validate(r)), 0, i)
    parts = set(range(settings.partitions))
    token = _Token()
    allocations: list[bytes] = []
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    stepping = 0.0
    for n, (resource, raw) in enumerate(messages):
        proc.on_events(raw, token, resource % settings.partitions, n)
        if n % 50 == 49:
            s0 = time.perf_counter()
            allocations += [v for _, v in proc.step(parts, parts).allocations]
            stepping += time.perf_counter() - s0
    for topic in (proc.events_topic, proc.rates_topic, proc.billing_topic):  # end of input
        proc._markers |= {(topic, p) for p in parts}
    proc.run_id = "micro"
    allocations += [v for _, v in proc.step(parts, parts).allocations]
    t1, c1 = time.perf_counter(), time.process_time()
    decoder = LedgerDecoder(settings)
    topic = settings.topic("cost-allocations")
    batch = decoder.decode([(topic, 0, i, raw) for i, raw in enumerate(allocations)])
    t2, c2 = time.perf_counter(), time.process_time()
    rows = batch.entries
    counted = sum(len(c[3]) for c in batch.counted)
    if prof:
        prof.disable()
        assert profile  # a profiler runs only with a file to write it to
        prof.dump_stats(profile)
    us = 1e6 / events
    return {
        "events": events,
        "messages": len(messages),
        "attribution_us_per_event": round((t1 - t0) * us, 2),
        "of_which_closing_us_per_event": round(stepping * us, 2),
        "ledger_decode_us_per_event": round((t2 - t1) * us, 2),
        # process CPU time: less disturbed than wall time by other work on the machine
        "attribution_cpu_us_per_event": round((c1 - c0) * us, 2),
        "ledger_decode_cpu_us_per_event": round((c2 - c1) * us, 2),
        "allocation_messages": len(allocations),
        "entries": len(rows),
        "counted": counted,
        "counters": dict(proc.counters),
    }


def stages(events: int, per_message: int, repeat: int = 3) -> dict[str, float]:
    """Microseconds per event of the ingest stages alone (the best of ``repeat`` runs each):
    decoding messages, building the core's requests, adding them to a fresh Book."""
    wl = Workload(events)
    messages = [raw for _, raw, _ in encode_batches(wl.generate(), per_message)]
    settings = Settings()
    tune_gc(settings)

    def best(work: Any) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            work()
            times.append(time.perf_counter() - t0)
        return round(min(times) * 1e6 / events, 2)

    decoded = [event_records(m) or [] for m in messages]
    requests = [[to_request(e) for e in batch] for batch in decoded]

    def add_all() -> None:
        add = Book(accounting_settings(settings)).add_request
        for batch in requests:
            for req in batch:
                add(req)

    return {
        "decode_us_per_event": best(lambda: [event_records(m) for m in messages]),
        "to_request_us_per_event": best(lambda: [[to_request(e) for e in b] for b in decoded]),
        "add_request_us_per_event": best(add_all),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--per-message", type=int, default=500)
    p.add_argument("--profile")
    p.add_argument("--stages", action="store_true", help="also time the ingest stages apart")
    a = p.parse_args()
    print(run(a.events, a.per_message, a.profile))
    if a.stages:
        print(stages(a.events, a.per_message))


if __name__ == "__main__":
    main()
