"""The larger fault run of issue 13, outside CI: one command, real broker and Postgres.

    ./dev faults --events 100000 --kills 30
    PYTHONPATH=. .venv/bin/python -m bench.faults --events 100000 --kills 30 --seed 7

A seeded scenario (``tests.helpers.fault_scenario``: rated nodes with traffic, one rated spare
node with none, zero-length and multi-bucket requests) is produced in ``--kills + 1`` chunks,
each out of order inside (shuffled within sliding windows of finish order), to a fresh embedded
broker (or ``INFERLEDGER_KAFKA_BOOTSTRAP``) and a fresh database on the local Postgres (or
``INFERLEDGER_DATABASE_URL``'s server). ``run attribution`` and ``run ledger`` stream it as
separate processes; between chunks one or both are killed with SIGKILL and started again. Then
``run all --until-idle`` finishes the input, and the ledger is compared with the pure core:
net positions per (resource, bucket, tenant, model), every event counted exactly once, every
idle bucket of the spare node. Prints a JSON summary; exits 1 when the ledger is not exact.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from services.ledger.db import migrate
from services.runtime.config import Settings
from services.runtime.kafka import ensure_topics
from services.runtime.stack import (
    EmbeddedBroker,
    admin_connect,
    embedded_postgres_url,
    postgres_answers,
)
from tests.helpers import (
    cli,
    counting_faults,
    expected_positions,
    explain_lost,
    fault_scenario,
    kill_group,
    position_diff,
    positions,
    publish_events,
    publish_rates,
    start_run,
)

ROOT = Path(__file__).resolve().parents[1]


def out_of_order(events: list[Any], rng: random.Random, window: int) -> list[Any]:
    ordered = sorted(events, key=lambda e: e.finished_at)
    out: list[Any] = []
    for i in range(0, len(ordered), max(1, window // 2)):
        out.extend(ordered[i : i + window // 2])
        j = max(0, len(out) - window)
        tail = out[j:]
        rng.shuffle(tail)
        out[j:] = tail
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--resources", type=int, default=12)
    ap.add_argument("--hours", type=float, default=None, help="default: 1 per 10,000 events")
    ap.add_argument("--window", type=int, default=400, help="events shuffled together")
    ap.add_argument("--min-gap", type=float, default=2.0, help="seconds between kills, least")
    ap.add_argument("--max-gap", type=float, default=6.0, help="seconds between kills, most")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    hours = args.hours or max(2.0, args.events / 10_000)
    events, rates = fault_scenario(
        args.seed, n_events=args.events, n_resources=args.resources, hours=hours
    )
    work = Path(tempfile.mkdtemp(prefix="inferledger-faults-"))
    broker = None
    bootstrap = os.environ.get("INFERLEDGER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = EmbeddedBroker().start(work / "broker.log")
        bootstrap = broker.bootstrap
    server = os.environ.get("INFERLEDGER_DATABASE_URL") or (
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        if postgres_answers()
        else embedded_postgres_url(ROOT / ".embedded")
    )
    name = f"il_faults_{uuid.uuid4().hex[:10]}"
    with admin_connect(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = make_url(server).set(database=name).render_as_string(False)
    summary: dict[str, Any] = {
        "events": len(events),
        "resources": args.resources + 1,
        "hours": hours,
        "seed": args.seed,
        "logs": str(work),
        "database": name,
    }
    try:
        migrate(db_url)
        prefix = f"f{uuid.uuid4().hex[:8]}."
        settings = Settings(
            kafka_bootstrap=bootstrap, database_url=db_url, topic_prefix=prefix, partitions=4
        )
        ensure_topics(settings)
        env = dict(
            os.environ,
            INFERLEDGER_KAFKA_BOOTSTRAP=bootstrap,
            INFERLEDGER_DATABASE_URL=db_url,
            INFERLEDGER_TOPIC_PREFIX=prefix,
            INFERLEDGER_LOG_FORMAT="json",
        )
        stream = out_of_order(events, rng, args.window)
        size = -(-len(stream) // (args.kills + 1))
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        publish_rates(settings, rates)
        logs = {w: work / f"{w}.log" for w in ("attribution", "ledger")}
        procs = {w: start_run(env, logs[w], w) for w in logs}
        kills: list[str] = []
        exited: list[str] = []
        started = time.monotonic()
        try:
            for n, chunk in enumerate(chunks):
                publish_events(settings, chunk, batch=rng.choice([20, 100, 500]))
                time.sleep(rng.uniform(args.min_gap, args.max_gap))
                if len(kills) >= args.kills:
                    continue
                for w in [["attribution"], ["ledger"], ["attribution", "ledger"]][n % 3]:
                    if procs[w].poll() is not None:
                        exited.append(f"{w} exited {procs[w].returncode} by itself")
                    kill_group(procs[w], signal.SIGKILL)
                    kills.append(w)
                    procs[w] = start_run(env, logs[w], w)
                print(f"chunk {n + 1}/{len(chunks)}, {len(kills)} kills", file=sys.stderr)
        finally:
            for p in procs.values():
                kill_group(p, signal.SIGKILL)
        summary["kills"] = len(kills)
        summary["exited_by_themselves"] = exited
        summary["stream_seconds"] = round(time.monotonic() - started, 1)
        t = time.monotonic()
        cli(env, "run", "all", "--until-idle", timeout=3600)
        summary["until_idle_seconds"] = round(time.monotonic() - t, 1)

        want = expected_positions(events, rates)
        got = positions(db_url)
        faults = counting_faults(db_url, events)
        spare_want = {k[1] for k in want if k[0] == "node-spare"}
        spare_got = {k[1] for k in got if k[0] == "node-spare"}
        summary.update(
            {
                "missing_events": len(faults["missing"]),
                "counted_twice": len(faults["twice"]),
                "unknown_counted": len(faults["unknown"]),
                "spare_idle_buckets": f"{len(spare_got & spare_want)} of {len(spare_want)}",
                "ledger_total": str(sum(v[0] for v in got.values())),
                "expected_total": str(sum(v[0] for v in want.values())),
                "exact": got == want and not any(faults.values()),
            }
        )
        if not summary["exact"]:
            summary["positions"] = position_diff(got, want, 20).splitlines()
            summary["lost"] = explain_lost(db_url, events, faults["missing"][:20])
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            with admin_connect(server) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(summary, indent=2))
    return 0 if summary.get("exact") else 1


if __name__ == "__main__":
    raise SystemExit(main())
