"""The benchmark's cases: the workload produced to fresh topics, its raw ceiling, a plain faust
agent, the pipeline as a user runs it, and the ledger writer fed directly; each on a scratch
database of its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.measure import (
    ROOT,
    PeakMemory,
    busy_cpu_seconds,
    profile_shares,
    service_cpu_seconds,
)
from bench.workload import Workload, encode_batches
from services.ledger.db import migrate
from services.runtime.config import EVENTS, RATES, Settings
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.stack import drop_database, recreate_database

CREATED: list[str] = []  # scratch databases of this run, dropped at its end (--keep-databases)


def drop_all(urls: list[str]) -> None:
    for url in urls:
        drop_database(url)


def fresh_database(base: Settings, name: str) -> str:
    """A new, migrated database beside the configured one, for one benchmark case."""
    assert base.database_url
    url = make_url(base.database_url).set(database=name).render_as_string(False)
    recreate_database(url)
    CREATED.append(url)
    migrate(url)
    return url


def produce(
    settings: Settings, work: Workload, per_message: int, linger_s: float
) -> dict[str, Any]:
    producer = make_producer(settings, linger_ms=50, batch_size=1_048_576, compression_type=None)
    for rate in work.rates():
        producer.send(
            settings.topic(RATES), key=rate["resource_id"], value=json.dumps(rate).encode()
        )
    started = time.monotonic()
    messages = events = 0
    for resource, value, count in encode_batches(work.generate(), per_message, linger_s=linger_s):
        producer.send(settings.topic(EVENTS), key=resource, value=value)
        messages += 1
        events += count
    producer.flush(600)
    producer.close(30)
    return {"messages": messages, "events": events, "seconds": time.monotonic() - started}


async def raw_ceiling(settings: Settings, messages: int) -> dict[str, Any]:
    """aiokafka reading the events topic from the start and decoding every message."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1_048_576,
        fetch_max_bytes=64 * 1_048_576,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    seen = events = 0
    started: float | None = None
    try:  # partitions assigned directly: no consumer group to join
        topic = settings.topic(EVENTS)
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_progress = time.monotonic()
        while seen < messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > 120:
                raise RuntimeError(f"raw ceiling: stuck at {seen:,} of {messages:,} messages")
            for records in batch.values():
                if started is None:
                    started = time.monotonic()
                for record in records:
                    obj = json.loads(record.value)
                    events += len(obj["events"]) if "events" in obj else 1
                    seen += 1
    finally:
        await consumer.stop()
    seconds = time.monotonic() - (started or time.monotonic())
    return {
        "messages": seen,
        "events": events,
        "seconds": seconds,
        "messages_per_s": seen / seconds,
        "events_per_s": events / seconds,
    }


def faust_baseline(settings: Settings, messages: int) -> dict[str, Any]:
    """bench/faust_baseline.py on the case's topic: faust's own per-message rate here."""
    env = dict(
        os.environ,
        INFERLEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        INFERLEDGER_TOPIC_PREFIX=settings.topic_prefix,
        INFERLEDGER_LOG_LEVEL="WARNING",
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.faust_baseline", str(messages)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_pipeline(settings: Settings, profile_dir: Path | None, workers: int = 1) -> dict[str, Any]:
    """``run all --until-idle`` as a user runs it, with ``workers`` attribution workers; py-spy
    samples it when ``profile_dir``."""
    env = dict(
        os.environ,
        INFERLEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        INFERLEDGER_DATABASE_URL=settings.database_url or "",
        INFERLEDGER_TOPIC_PREFIX=settings.topic_prefix,
        INFERLEDGER_LOG_FORMAT="json",
    )
    started = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "run",
            "all",
            "--until-idle",
            "--attribution-workers",
            str(workers),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = PeakMemory(proc.pid, profile_dir)
    memory.start()
    machine_busy = busy_cpu_seconds()
    _, err = proc.communicate()
    machine_busy = busy_cpu_seconds() - machine_busy
    if profile_dir is not None:
        (profile_dir / "pipeline.log").write_text(err)
    memory.stop.set()
    memory.join()
    for sampler in memory.samplers.values():
        sampler.wait(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline failed:\n{err[-4000:]}")
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    first = min(
        (x["at"] for x in logs if x.get("event") == "first message consumed"), default=started
    )
    finished = {x["event"]: x for x in logs if x.get("event", "").endswith("finished")}
    # each attribution worker's own counters ("attribution" alone, else "attribution-<n>")
    worker_counters = {
        "attribution" + (f"-{x['worker']}" if "worker" in x else ""): x
        for x in logs
        if x.get("event") == "attribution finished"
    }
    return {
        "wall_seconds": time.time() - started,
        "first_consumed_at": first,
        "peak_rss_mb": {k: round(v / 1024, 1) for k, v in memory.peaks.items()},
        "rss_mb_by_tenth": memory.rss_by_tenth(),
        "cpu_seconds": {
            **{k: round(v, 1) for k, v in memory.cpu_seconds.items()},
            **{  # the broker and Postgres over the whole run
                k: round(series[-1][1] - series[0][1], 1)
                for k, series in memory.cpu_series.items()
                if k in ("broker", "postgres")
            },
            "whole machine": round(machine_busy, 1),
        },
        "counters": finished,
        "worker_counters": worker_counters,
        "memory": memory,
    }


def ledger_stats(db_url: str) -> dict[str, Any]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*), extract(epoch FROM min(recorded_at)), "
                "extract(epoch FROM max(recorded_at)), sum(completions) + sum(failed_requests) "
                "FROM ledger_entries"
            )
        ).one()
    engine.dispose()
    rows, first, last, counted = row
    return {
        "rows": rows,
        "first_at": float(first),
        "last_at": float(last),
        "requests_counted": int(counted),
    }


CASES = {  # name: (most events per message, emitter linger in event-time seconds)
    "batched": (500, 1.0),  # an emitter flushing every second: about 20 events per message
    "batched-4": (4, 1.0),  # the same, at most 4 events per message (a sparser node's emitter)
    "batched-2w": (500, 1.0),  # the same with two attribution workers (WORKERS)
    "batched-10s": (500, 10.0),  # flushing every 10 s: about 128 events per message
    "single": (1, 0.0),
}
WORKERS = {"batched-2w": 2}  # attribution workers of a case (1 if not named here)
#: the attribution counters of events fed to the accounting core, whatever it decided
EVENT_COUNTERS = tuple(f"events.{a}" for a in ("accepted", "late", "duplicate", "conflict",
                                              "too_late"))  # fmt: skip


def per_worker(
    counters: dict[str, dict[str, Any]],
    cpu_whole: dict[str, float],
    cpu_measured: dict[str, float],
    peak_rss_mb: dict[str, float],
) -> list[dict[str, Any]]:
    """Per attribution worker: the events partitions its end markers covered, the events it
    processed, and its CPU seconds (whole process, and from the first message consumed to the
    last ledger row) per event. Flat per-worker CPU per event as workers are added means
    throughput grows with cores and partitions."""
    out = []
    for name in sorted(counters):
        c = counters[name]
        events = sum(int(c.get(k, 0)) for k in EVENT_COUNTERS)
        measured = cpu_measured.get(name)
        out.append(
            {
                "worker": name,
                "partitions": c.get("covers", []),
                "events_processed": events,
                "cpu_seconds": cpu_whole.get(name),
                "cpu_seconds_measured": measured,
                "cpu_us_per_event": round(measured * 1e6 / events, 1)
                if measured is not None and events
                else None,
                "peak_rss_mb": peak_rss_mb.get(name),
            }
        )
    return out


def _sum_workers(values: dict[str, float], combine: Any = sum) -> dict[str, float]:
    """Several workers' values also as one "attribution" value (for the all-process sums)."""
    workers = [v for k, v in values.items() if k.startswith("attribution-")]
    if not workers or "attribution" in values:
        return values
    return {**values, "attribution": round(combine(workers), 1)}


def run_case(
    base: Settings,
    name: str,
    work: Workload,
    per_message: int,
    linger_s: float,
    profiles: Path | None,
    workers: int = 1,
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    db_url = fresh_database(base, f"bench_{prefix[5:-1]}")
    settings = base.model_copy(update={"topic_prefix": prefix, "database_url": db_url})
    ensure_topics(settings)
    print(f"[{name}] producing {work.events:,} events ...", file=sys.stderr)
    produced = produce(settings, work, per_message, linger_s)
    print(f"[{name}] raw ceiling ...", file=sys.stderr)
    raw = asyncio.run(raw_ceiling(settings, produced["messages"]))
    print(f"[{name}] plain faust agent that only decodes ...", file=sys.stderr)
    baseline = faust_baseline(settings, produced["messages"])
    print(f"[{name}] pipeline ...", file=sys.stderr)
    profile_dir = profiles / name if profiles else None
    pipe = run_pipeline(settings, profile_dir, workers)
    stats = ledger_stats(db_url)
    seconds = stats["last_at"] - pipe["first_consumed_at"]
    memory = pipe.pop("memory")
    measured_cpu = memory.cpu_between(pipe["first_consumed_at"], stats["last_at"])
    workers_result = per_worker(
        pipe["worker_counters"], memory.cpu_seconds, measured_cpu, pipe["peak_rss_mb"]
    )
    measured_cpu = _sum_workers(measured_cpu)
    pipe["cpu_seconds"] = _sum_workers(pipe["cpu_seconds"])
    pipe["peak_rss_mb"] = _sum_workers(pipe["peak_rss_mb"], max)
    events_per_s = produced["events"] / seconds
    result = {
        "case": name,
        "events": produced["events"],
        "messages": produced["messages"],
        "max_events_per_message": per_message,
        "linger_seconds": linger_s,
        "attribution_workers": workers,
        "produce_seconds": round(produced["seconds"], 2),
        "raw_ceiling": {k: round(v, 1) if isinstance(v, float) else v for k, v in raw.items()},
        "faust_baseline": baseline,
        "pipeline": {
            "seconds_first_consumed_to_last_committed": round(seconds, 2),
            "events_per_s": round(events_per_s, 1),
            "ratio_to_raw_events_per_s": round(events_per_s / raw["events_per_s"], 4),
            "messages_per_s": round(produced["messages"] / seconds, 1),
            "ratio_to_raw_messages_per_s": round(
                produced["messages"] / seconds / raw["messages_per_s"], 4
            ),
            "ratio_to_faust_events_per_s": round(events_per_s / baseline["events_per_s"], 4),
            "ratio_to_faust_messages_per_s": round(
                produced["messages"] / seconds / baseline["messages_per_s"], 4
            ),
            "ledger_rows": stats["rows"],
            "ledger_rows_per_s": round(
                stats["rows"] / max(stats["last_at"] - stats["first_at"], 1e-9), 1
            ),
            "requests_counted": stats["requests_counted"],
            "peak_rss_mb": pipe["peak_rss_mb"],
            "rss_mb_by_tenth": pipe["rss_mb_by_tenth"],
            "cpu_seconds": pipe["cpu_seconds"],
            "wall_seconds": round(pipe["wall_seconds"], 2),
        },
        "workers": workers_result,
        "time_share": {
            which: profile_shares(profile_dir / f"{which}.txt")
            for which in sorted(memory.samplers)
            if which != "alerts"
        }
        if profile_dir
        else {},
    }
    # CPU per event: both processors, the broker and Postgres, from the first message consumed
    # to the last ledger row committed (issue 19's targets: 15 µs at 20 events a message, 40 at 4)
    used = sum(measured_cpu.get(k, 0.0) for k in ("attribution", "ledger", "broker", "postgres"))
    result["cpu_per_event"] = {
        "cpu_seconds_in_measured_run": measured_cpu,
        "pipeline_cpu_seconds": round(used, 2),
        "pipeline_us_per_event": round(used / produced["events"] * 1e6, 1),
        "us_per_event": {
            k: round(v / produced["events"] * 1e6, 1) for k, v in sorted(measured_cpu.items())
        },
        "cores": os.cpu_count(),
    }
    if stats["requests_counted"] != produced["events"]:
        result["warning"] = "not every event was counted in the ledger"
    return result


def ledger_write_capacity(
    base: Settings, rows: int = 200_000, batch: int = 5_000
) -> dict[str, Any]:
    """How fast the ledger writer's transaction (COPY, INSERT ... ON CONFLICT DO NOTHING,
    offsets) writes ledger rows into Postgres, fed directly (no Kafka)."""
    from decimal import Decimal
    from types import SimpleNamespace

    from services.contracts import LedgerEntry
    from services.ledger.db import entry_row, make_engine, write_batch

    assert base.database_url
    db_url = fresh_database(base, f"bench_w{uuid.uuid4().hex[:8]}")
    engine = make_engine(db_url)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    entries = [
        LedgerEntry(
            entry_id=f"{i:032x}",
            entry_kind="usage",
            cost_basis="provisional",
            tenant_id=f"tenant-{i % 20}",
            model="m",
            resource_id=f"n{i % 64}",
            bucket_start=start + timedelta(minutes=i // 1000),
            bucket_seconds=60,
            completions=1,
            amount=Decimal("0.000123456789"),
            currency="USD",
        )
        for i in range(rows)
    ]
    started = time.monotonic()
    cpu0, pg0 = time.process_time(), service_cpu_seconds()["postgres"]
    written = 0
    for i in range(0, rows, batch):
        chunk = SimpleNamespace(
            entries=[entry_row(e) for e in entries[i : i + batch]],  # timed, as in the writer
            rates=[],
            bills=[],
            counted=[],
            offsets={("bench", 0): i + batch},
        )
        written += write_batch(engine, "bench", chunk)
    seconds = time.monotonic() - started
    cpu = time.process_time() - cpu0
    pg = service_cpu_seconds()["postgres"] - pg0  # (every Postgres process of this machine)
    engine.dispose()
    return {
        "rows": written,
        "batch": batch,
        "seconds": round(seconds, 2),
        "rows_per_s": round(written / seconds, 1),
        "writer_cpu_us_per_row": round(cpu * 1e6 / max(written, 1), 2),
        "postgres_cpu_us_per_row": round(pg * 1e6 / max(written, 1), 2),
    }
