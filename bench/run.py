"""The inferledger benchmark: one command, real broker and Postgres, results in bench/results/.

    ./dev bench                          # 1,000,000 events: batched (1 s linger, with one and
                                         # with two attribution workers, and 10 s linger), then
                                         # one event per message, then streaming
    ./dev bench --events 200000 --cases batched --stream-rate 0

For each case it produces the workload (bench/workload.py) to fresh topics, measures the raw
ceiling (aiokafka consuming and JSON-decoding the same messages, nothing else), then runs the
pipeline (`inferledger run all --until-idle`, one process per processor) and reports events/s
end to end (first message consumed by the attribution processor to the last ledger row
committed), the ratio to the raw ceiling, each process's peak resident memory, ledger rows/s,
and where the processors spent their time: py-spy samples each process during the measured run
(sampling from outside, so the run is not slowed the way an in-process profiler slows it).
Each case is also compared with a plain faust agent that only decodes: faust's per-message
path bounds every faust consumer, so its events/s ratio to the raw ceiling is the most any faust
pipeline can reach with that many events per message. The batched-2w case runs the batched
workload with two attribution workers and reports, per worker, the events it processed and
its CPU microseconds per event, next to the one worker of the batched case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cases import CASES, CREATED, WORKERS, drop_all, ledger_write_capacity, run_case
from bench.measure import ROOT, machine
from bench.report import markdown
from bench.streaming import streaming_latency
from bench.workload import Workload
from services.runtime.config import load_settings
from services.runtime.stack import local_stack

RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--single-events",
        type=int,
        default=None,
        help="events of the one-event-per-message case (default: --events, the same workload)",
    )
    parser.add_argument("--resources", type=int, default=64)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500, help="most events per batch message")
    parser.add_argument(
        "--cases",
        default="batched,batched-2w,batched-4,batched-10s,single",
        help=f"of {', '.join(CASES)} (batched-2w: batched with two attribution workers)",
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--stream-rate",
        type=int,
        default=20_000,
        help="events/s offered in the streaming case (0: skip it)",
    )
    parser.add_argument("--stream-seconds", type=int, default=60)
    parser.add_argument(
        "--ledger-rows", type=int, default=200_000, help="rows of the ledger write capacity case"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the JSON and Markdown results go"
    )
    parser.add_argument(
        "--keep-databases",
        action="store_true",
        help="keep each case's scratch database (bench_*) for a look afterwards",
    )
    args = parser.parse_args()
    unknown = set(filter(None, args.cases.split(","))) - CASES.keys()
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}: choose from {', '.join(CASES)}")
    settings = load_settings()
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "cases": [],
    }
    with local_stack(settings) as s, contextlib.ExitStack() as cleanup:
        if not args.keep_databases:
            cleanup.callback(drop_all, CREATED)
        profiles = None if args.no_profile else args.results / "profiles"
        report["broker"] = "configured" if settings.kafka_bootstrap else "embedded Tansu"
        for case in filter(None, args.cases.split(",")):
            per, linger = CASES[case]
            n = args.events if per > 1 else (args.single_events or args.events)
            work = Workload(n, args.resources, args.tenants)
            per = min(per, args.batch)
            workers = WORKERS.get(case, 1)
            report["cases"].append(run_case(s, case, work, per, linger, profiles, workers))
            print(json.dumps(report["cases"][-1], indent=2), file=sys.stderr)
        print("[ledger write capacity] ...", file=sys.stderr)
        report["ledger_write_capacity"] = ledger_write_capacity(s, args.ledger_rows)
        if args.stream_rate:
            print("[streaming] offering load ...", file=sys.stderr)
            report["streaming"] = streaming_latency(
                s, args.stream_rate, args.stream_seconds, 10, 5, args.resources
            )
            print(json.dumps(report["streaming"], indent=2), file=sys.stderr)
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"].replace(":", "").replace("-", "")
    (out / f"{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stamp}.md").write_text(markdown(report))
    (out / "latest.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
