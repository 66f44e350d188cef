"""The inferledger benchmark: one command, real broker and Postgres, results in bench/results/.

    ./dev bench                          # 1,000,000 events: batched (1 s and 10 s linger), then
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
pipeline can reach with that many events per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.workload import Workload, encode_batches
from services.ledger.db import migrate
from services.runtime.config import EVENTS, RATES, Settings, load_settings
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.stack import drop_database, local_stack, recreate_database

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


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


class PeakMemory(threading.Thread):
    """Polls VmHWM (peak resident set) of a process tree's processes, by command; with
    ``profile_dir``, starts a py-spy sampler on each of them as it appears."""

    def __init__(self, root_pid: int, profile_dir: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peaks: dict[str, int] = {}
        self.stop = threading.Event()
        self.profile_dir = profile_dir
        self.samplers: dict[str, subprocess.Popen[bytes]] = {}
        self.cpu_seconds: dict[str, float] = {}
        # (wall time, CPU seconds so far) every 0.2 s: the processors, the broker, Postgres
        self.cpu_series: dict[str, list[tuple[float, float]]] = {}
        self.rss: dict[str, list[int]] = {}  # VmRSS samples (kB), every 0.2 s

    def rss_by_tenth(self) -> dict[str, list[float]]:
        """Each process's largest resident set in each tenth of its run (MB): flat when
        memory does not grow with the events processed."""
        out = {}
        for name, samples in self.rss.items():
            n = len(samples)
            if n < 10:
                continue
            out[name] = [
                round(max(samples[i * n // 10 : (i + 1) * n // 10]) / 1024, 1) for i in range(10)
            ]
        return out

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            now = time.time()
            for name, used in service_cpu_seconds().items():
                self.cpu_series.setdefault(name, []).append((now, used))
            for pid, name in self._tree():
                if self.profile_dir is not None and name not in self.samplers:
                    self.samplers[name] = sample(pid, self.profile_dir / f"{name}.txt")
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu_seconds[name] = (int(fields[11]) + int(fields[12])) / tick
                    self.cpu_series.setdefault(name, []).append((now, self.cpu_seconds[name]))
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            kb = int(line.split()[1])
                            self.peaks[name] = max(self.peaks.get(name, 0), kb)
                        elif line.startswith("VmRSS:"):
                            self.rss.setdefault(name, []).append(int(line.split()[1]))
                except OSError:
                    pass
            self.stop.wait(0.2)

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each process used from ``start`` to ``end`` (wall clock), from the
        samples just before and just after (so slightly more, never less)."""
        out = {}
        for name, series in self.cpu_series.items():
            before = [c for t, c in series if t <= start] or [series[0][1]]
            after = [c for t, c in series if t >= end] or [series[-1][1]]
            out[name] = round(after[0] - before[-1], 1)
        return out

    def _tree(self) -> list[tuple[int, str]]:
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if ppid == self.root_pid and b"run" in cmd:
                which = cmd[cmd.index(b"run") + 1].decode() if b"run" in cmd else "?"
                out.append((int(entry.name), which))
        return out


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes: broker and Postgres too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the broker's and Postgres's processes on this machine.

    Postgres backends that exit count through the postmaster's children times, so the
    difference of two readings is what they used in between. A broker or Postgres on another
    machine reads as 0."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"broker": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        f = stat.rsplit(")", 1)[1].split()
        used = sum(int(x) for x in f[11:15]) / tick  # utime, stime, cutime, cstime
        if comm == "postgres":
            out["postgres"] += used
        elif b"broker" in cmd and b"--listener-url" in cmd:
            out["broker"] += used
    return out


def sample(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy at 100 Hz on ``pid`` until it exits (non-blocking: the process is not paused)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(out)]
    return subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL)


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


def run_pipeline(settings: Settings, profile_dir: Path | None) -> dict[str, Any]:
    """``run all --until-idle`` as a user runs it; py-spy samples it when ``profile_dir``."""
    env = dict(
        os.environ,
        INFERLEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        INFERLEDGER_DATABASE_URL=settings.database_url or "",
        INFERLEDGER_TOPIC_PREFIX=settings.topic_prefix,
        INFERLEDGER_LOG_FORMAT="json",
    )
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "all", "--until-idle"],
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


AREAS = [  # the first rule matching a frame, innermost frame first, names the sample's area
    ("postgres", ("sqlalchemy", "psycopg", "services/ledger/db.py", "attribution/state.py")),
    ("decode", ("pydantic", "services/contracts", "/json/")),
    ("accounting", ("services/accounting",)),
    ("kafka", ("aiokafka", "/kafka/", "faust/transport")),
    ("processor glue", ("services/",)),
    ("faust and asyncio", ("faust/", "mode/", "asyncio", "selectors.py", "concurrent/")),
]


def profile_shares(path: Path) -> dict[str, float]:
    """Share of a process's busy samples (py-spy, idle excluded) by area."""
    if not path.exists():
        return {}
    areas: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        area = next(
            (a for f in reversed(frames) for a, keys in AREAS if any(k in f for k in keys)),
            "other",
        )
        areas[area] = areas.get(area, 0) + int(count)
    total = sum(areas.values())
    return {a: round(n / total, 3) for a, n in sorted(areas.items())} if total else {}


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


CASES = {  # name: (most events per message, emitter linger in event-time seconds)
    "batched": (500, 1.0),  # an emitter flushing every second: about 20 events per message
    "batched-10s": (500, 10.0),  # flushing every 10 s: about 128 events per message
    "single": (1, 0.0),
}


def run_case(
    base: Settings,
    name: str,
    work: Workload,
    per_message: int,
    linger_s: float,
    profiles: Path | None,
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
    pipe = run_pipeline(settings, profile_dir)
    stats = ledger_stats(db_url)
    seconds = stats["last_at"] - pipe["first_consumed_at"]
    measured_cpu = pipe.pop("memory").cpu_between(pipe["first_consumed_at"], stats["last_at"])
    events_per_s = produced["events"] / seconds
    result = {
        "case": name,
        "events": produced["events"],
        "messages": produced["messages"],
        "max_events_per_message": per_message,
        "linger_seconds": linger_s,
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
        "time_share": {
            which: profile_shares(profile_dir / f"{which}.txt")
            for which in ("attribution", "ledger")
        }
        if profile_dir
        else {},
    }
    # the 40 % target as CPU: the pipeline's processes (both processors, the broker and
    # Postgres, over their whole runs) would have to fit in this wall time
    used = sum(measured_cpu.get(k, 0.0) for k in ("attribution", "ledger", "broker", "postgres"))
    target_seconds = produced["events"] / (0.4 * raw["events_per_s"])
    others = used - measured_cpu.get("attribution", 0.0)
    result["cpu_for_40_percent"] = {
        "cpu_seconds_in_measured_run": measured_cpu,
        "pipeline_cpu_seconds": round(used, 1),
        "cores_needed_without_attribution": round(others / target_seconds, 2),
        "wall_seconds_at_40_percent": round(target_seconds, 2),
        "cores_needed": round(used / target_seconds, 2),
        "cores": os.cpu_count(),
    }
    if stats["requests_counted"] != produced["events"]:
        result["warning"] = "not every event was counted in the ledger"
    return result


def streaming_latency(
    base: Settings, rate: int, seconds: int, bucket: int, lateness: int, resources: int
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds`` with event time = wall clock to processors that
    stream (`run all`, no --until-idle), and measure, per closed (resource, bucket), when its
    first entry was visible in Postgres minus the earliest moment the design allows it to
    close (bucket end + allowed lateness)."""
    prefix = f"lat{uuid.uuid4().hex[:8]}."
    db_url = fresh_database(base, f"bench_{prefix[:-1]}")
    settings = base.model_copy(update={"topic_prefix": prefix, "database_url": db_url})
    ensure_topics(settings)
    env = dict(
        os.environ,
        INFERLEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        INFERLEDGER_DATABASE_URL=db_url,
        INFERLEDGER_TOPIC_PREFIX=prefix,
        INFERLEDGER_BUCKET_SECONDS=str(bucket),
        INFERLEDGER_ALLOWED_LATENESS_SECONDS=str(lateness),
        INFERLEDGER_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "all"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    producer = make_producer(settings, linger_ms=5)
    nodes = [f"lat-node-{i:03d}" for i in range(resources)]
    now = datetime.now(UTC)
    for node in nodes:
        producer.send(
            settings.topic(RATES),
            key=node,
            value=json.dumps(
                {
                    "resource_id": node,
                    "price_per_hour": "20.00",
                    "currency": "USD",
                    "effective_from": now.isoformat(),
                }
            ).encode(),
        )
    time.sleep(8)  # consumer groups join (half the session timeout on Tansu)
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    sent = 0
    # one template per event, formatted with the tick's timestamps: the load generator shares
    # the machine with the pipeline, so it must cost little per event
    template = (
        '{"event_id":"l%d","tenant_id":"tenant-%02d","resource_id":"%s","model":"m",'
        '"engine":"vllm","started_at":"%s","finished_at":"%s","prompt_tokens":500,'
        '"completion_tokens":50,"status":"ok"}'
    )
    heads = {n: b'{"resource_id":"' + n.encode() + b'","events":[' for n in nodes}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        t0 = time.monotonic()
        finish = datetime.now(UTC)
        fin = finish.isoformat()
        begin = (finish - timedelta(milliseconds=300)).isoformat()
        batches: dict[str, list[str]] = {}
        for i in range(sent, sent + per_tick):
            node = nodes[i % len(nodes)]
            batches.setdefault(node, []).append(template % (i, i % 20, node, begin, fin))
        for node, items in batches.items():
            producer.send(
                settings.topic(EVENTS),
                key=node,
                value=heads[node] + ",".join(items).encode() + b"]}",
            )
        sent += per_tick
        time.sleep(max(0.0, tick - (time.monotonic() - t0)))
    producer.flush(60)
    offered_s = time.monotonic() - started
    time.sleep(bucket + lateness + 10)  # let the last full buckets close
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT extract(epoch FROM min(recorded_at)) "
                    "- extract(epoch FROM bucket_start) - :w - :l FROM ledger_entries "
                    "WHERE entry_kind IN ('usage', 'idle') "
                    "AND completions + work_units > 0 GROUP BY resource_id, bucket_start"
                ),
                {"w": bucket, "l": lateness},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    lat = sorted(float(x) for x in rows)
    if not lat:
        return {"offered_events_per_s": rate, "buckets": 0}

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3)

    return {
        "offered_events_per_s": rate,
        "achieved_offer_events_per_s": round(sent / offered_s),
        "seconds": seconds,
        "bucket_seconds": bucket,
        "allowed_lateness_seconds": lateness,
        "buckets": len(lat),
        "p50_s": q(0.5),
        "p99_s": q(0.99),
        "max_s": round(lat[-1], 3),
    }


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
    engine.dispose()
    return {
        "rows": written,
        "batch": batch,
        "seconds": round(seconds, 2),
        "rows_per_s": round(written / seconds, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# inferledger benchmark, {report['started_at']}",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, "
        f"commit {m['commit']}; broker {report['broker']}.",
        "",
        "| case | events | msgs | events/msg | raw ceiling ev/s | pipeline ev/s | ratio |"
        " plain faust ev/s (ratio to raw) | plain faust msgs/s | pipeline msgs/s |"
        " ratio to faust | ledger rows/s | peak RSS MB (attribution / ledger) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        p = c["pipeline"]
        rss = p["peak_rss_mb"]
        raw, faust = c["raw_ceiling"], c["faust_baseline"]
        lines.append(
            f"| {c['case']} | {c['events']:,} | {c['messages']:,} | "
            f"{c['events'] / c['messages']:,.1f} | "
            f"{raw['events_per_s']:,.0f} | {p['events_per_s']:,.0f} | "
            f"{p['ratio_to_raw_events_per_s']:.1%} | "
            f"{faust['events_per_s']:,.0f} ({faust['events_per_s'] / raw['events_per_s']:.1%}) | "
            f"{faust['messages_per_s']:,.0f} | {p['messages_per_s']:,.0f} | "
            f"{p['ratio_to_faust_messages_per_s']:.1%} | {p['ledger_rows_per_s']:,.0f} | "
            f"{rss.get('attribution', '?')} / "
            f"{rss.get('ledger', '?')} |"
        )
    lines.append(
        "\n| case | CPU s from first message to last row: attribution / ledger / broker /"
        " Postgres | 40 % of raw as wall s | cores that CPU needs in that time |"
        " the same without attribution |\n|---|---|---|---|---|"
    )
    for c in report["cases"]:
        need = c.get("cpu_for_40_percent")
        if need:
            cpu = need["cpu_seconds_in_measured_run"]
            parts = " / ".join(
                str(cpu.get(k, "?")) for k in ("attribution", "ledger", "broker", "postgres")
            )
            lines.append(
                f"| {c['case']} | {parts} | {need['wall_seconds_at_40_percent']} | "
                f"{need['cores_needed']} of {need['cores']} | "
                f"{need['cores_needed_without_attribution']} |"
            )
    cap = report.get("ledger_write_capacity")
    if cap:
        lines.append(
            f"\nLedger writer transaction fed directly: {cap['rows']:,} rows in batches "
            f"of {cap['batch']:,}: {cap['rows_per_s']:,.0f} rows/s"
        )
    lat = report.get("streaming")
    if lat:
        lines.append(
            f"\nStreaming, {lat.get('achieved_offer_events_per_s', '?')} events/s offered for "
            f"{lat.get('seconds')} s (W = {lat.get('bucket_seconds')} s, lateness "
            f"{lat.get('allowed_lateness_seconds')} s): latency beyond what the design makes a "
            f"bucket wait, over {lat['buckets']} buckets: p50 {lat.get('p50_s')} s, "
            f"p99 {lat.get('p99_s')} s, max {lat.get('max_s')} s"
        )
    for c in report["cases"]:
        for which, tenths in c["pipeline"].get("rss_mb_by_tenth", {}).items():
            lines.append(
                f"\n{c['case']}, {which} resident MB in each tenth of the run: "
                + " ".join(str(x) for x in tenths)
            )
    for c in report["cases"]:
        for which, shares in c.get("time_share", {}).items():
            if shares:
                parts = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
                lines.append(f"\n{c['case']}, {which} process time: {parts}")
    return "\n".join(lines) + "\n"


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
        "--cases", default="batched,batched-10s,single", help=f"of {', '.join(CASES)}"
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
            report["cases"].append(run_case(s, case, work, per, linger, profiles))
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
