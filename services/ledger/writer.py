"""The ledger writer as a faust app: decode allocations, write them in batches, idempotently."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import psycopg
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from services.contracts import (
    BillingLine,
    DecodeError,
    EndOfInput,
    GpuRate,
    Price,
    decode_allocation,
    decode_billing,
    decode_price,
    decode_rate,
)
from services.contracts.fast import allocation_record
from services.ledger.db import counted_set, entry_row, make_engine, record_row, write_batch
from services.ledger.markers import uncovered
from services.runtime import logs
from services.runtime.config import ALLOCATIONS, BILLING, EVENTS, PRICES, RATES, Settings
from services.runtime.faustapp import (
    Records,
    commit_offsets,
    crash_on_error,
    make_app,
    read_batches,
    read_in_batches,
)
from services.runtime.health import kafka_errors, postgres_errors, retry_async, retry_sync
from services.runtime.kafka import dead_letter
from services.runtime.metrics import GaugesCollector, Histogram, HistogramCollector, Sample

log = logs.get(__name__)
GROUP = "inferledger-ledger"


@dataclass
class Batch:
    entries: list[tuple[Any, ...]] = field(default_factory=list)  # rows of ENTRY_COLUMNS
    rates: list[GpuRate] = field(default_factory=list)
    prices: list[Price] = field(default_factory=list)
    bills: list[BillingLine] = field(default_factory=list)
    counted: list[tuple[Any, ...]] = field(default_factory=list)  # rows of COUNTED_COLUMNS
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)
    markers: list[tuple[str, int, str]] = field(default_factory=list)
    # the markers read on cost-allocations, stored with the batch (end_markers): those a
    # wait beside running processors looks for (input topics' markers are not stored)
    marked: list[tuple[str, int, str]] = field(default_factory=list)
    # per allocation with entries: the end of its bucket (Unix seconds), and whether it is the
    # bucket's first decision (usage and idle entries) or a later adjustment (for /metrics)
    bucket_ends: list[tuple[float, bool]] = field(default_factory=list)


FIRST_KINDS = frozenset(("usage", "idle"))  # entry kinds of a bucket's first decision
#: upper bounds of inferledger_event_to_ledger_seconds' buckets: a first decision waits at
#: least the allowed lateness (120 s by default) after its bucket's end
LATENCY_BOUNDS = (1, 5, 15, 30, 60, 90, 120, 135, 150, 180, 240, 300, 600, 1800, 3600,
                  4 * 3600, 24 * 3600, 7 * 24 * 3600)  # fmt: skip


class LedgerDecoder:
    """Turns consumed messages into one database batch (no faust, no SQL)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.alloc_topic = settings.topic(ALLOCATIONS)
        self.rates_topic = settings.topic(RATES)
        self.billing_topic = settings.topic(BILLING)
        self.prices_topic = settings.topic(PRICES)
        self.counters: Counter[str] = Counter()

    def decode(self, messages: list[tuple[str, int, int, bytes | None]]) -> Batch:
        batch = Batch()
        for topic, partition, offset, raw in messages:
            batch.offsets[(topic, partition)] = offset + 1
            if raw is None:  # a tombstone carries nothing: counted and skipped
                self.counters["tombstones"] += 1
                continue
            if topic == self.alloc_topic and self._fast(raw, batch):
                continue
            try:
                msg: Any
                if topic == self.alloc_topic:
                    msg = decode_allocation(raw)
                elif topic == self.billing_topic:
                    msg = decode_billing(raw)
                elif topic == self.prices_topic:
                    msg = decode_price(raw)
                else:
                    msg = decode_rate(raw)
            except DecodeError as exc:
                if topic not in (self.alloc_topic, self.prices_topic):
                    # the attribution processor owns the input dead letters (not of prices:
                    # only this writer reads them); count only
                    self.counters[f"input.rejected.{exc.reason}"] += 1
                    continue
                self.counters[f"dlq.{exc.reason}"] += 1
                batch.dead_letters.append(
                    (
                        f"{topic}.dlq",
                        dead_letter(
                            topic,
                            exc.reason,
                            exc.detail,
                            raw,
                            self.settings.dlq_payload_limit,
                            source="ledger",
                            partition=partition,
                            offset=offset,
                        ),
                    )
                )
                continue
            if isinstance(msg, EndOfInput):
                batch.markers.append((topic, partition, msg.run_id))
                if topic == self.alloc_topic:
                    batch.marked.append((topic, partition, msg.run_id))
            elif isinstance(msg, GpuRate):
                batch.rates.append(msg)
            elif isinstance(msg, BillingLine):
                batch.bills.append(msg)
            elif isinstance(msg, Price):
                batch.prices.append(msg)
            else:
                batch.entries.extend(entry_row(e) for e in msg.entries)
                if msg.entries:
                    batch.bucket_ends.append(
                        (
                            msg.bucket_start.timestamp() + msg.bucket_seconds,
                            any(e.entry_kind in FIRST_KINDS for e in msg.entries),
                        )
                    )
                if msg.counted_events:
                    batch.counted.append(
                        counted_set(msg.resource_id, msg.bucket_start, msg.counted_events)
                    )
        return batch

    @staticmethod
    def _fast(raw: bytes, batch: Batch) -> bool:
        """An allocation through the fast path (False: the full decoder must look at it)."""
        if not isinstance(raw, bytes):
            return False
        a = allocation_record(raw)
        if a is None:
            return False
        rows = [record_row(e) for e in a.entries]
        if None in rows:
            return False
        batch.entries.extend(cast(list[tuple[Any, ...]], rows))
        if a.entries:
            batch.bucket_ends.append(
                (
                    a.bucket_start.timestamp() + a.bucket_seconds,
                    any(e.entry_kind in FIRST_KINDS for e in a.entries),
                )
            )
        if a.counted_events:
            batch.counted.append(counted_set(a.resource_id, a.bucket_start, a.counted_events))
        return True


def build(
    settings: Settings, run_id: str | None = None, engine: Engine | None = None
) -> tuple[faust.App, asyncio.Event]:
    app = make_app(settings, settings.group(GROUP))
    if not settings.database_url:
        raise ValueError("database_url is not resolved")
    db = engine or make_engine(settings.database_url)
    decoder = LedgerDecoder(settings)
    alloc_name, rates_name = settings.topic(ALLOCATIONS), settings.topic(RATES)
    billing_name, prices_name = settings.topic(BILLING), settings.topic(PRICES)
    done = asyncio.Event()
    seen_markers: set[tuple[str, int]] = set()
    counters = decoder.counters

    def assigned(topic: str) -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}

    # a bounded run: the events partitions (every one must be covered by the attribution
    # workers' end markers on every cost-allocations partition), and when coverage was last read
    events_partitions: set[int] = set()
    if run_id is not None:
        events_name = settings.topic(EVENTS)
        events_partitions = retry_sync(
            "kafka", lambda: _partitions(settings, events_name), kafka_errors()
        )
    covered_at = [0.0]

    def check_done() -> None:
        if run_id is None or done.is_set():
            return
        needed = {(rates_name, p) for p in assigned(rates_name)}
        needed |= {(billing_name, p) for p in assigned(billing_name)}
        needed |= {(prices_name, p) for p in assigned(prices_name)}
        allocs = assigned(alloc_name)
        if not allocs or not needed <= seen_markers:
            return
        # the workers' markers (services/contracts/markers.py) are stored in end_markers in
        # the transaction of the entries before them: read at most every 0.5 s
        now = time.monotonic()
        if now - covered_at[0] < 0.5:
            return
        covered_at[0] = now
        try:
            missing = uncovered(db, run_id, alloc_name, allocs, events_partitions)
        except pg_errors as exc:  # an outage: the write path waits it out; look again later
            log.warning("reading the run's end markers failed", error=repr(exc)[:300])
            return
        if not missing:
            log.info("ledger writer finished", **dict(counters))
            done.set()

    pg_errors, kafka_errors_ = postgres_errors(), kafka_errors()
    closes, adjustments = Histogram(LATENCY_BOUNDS), Histogram(LATENCY_BOUNDS)

    async def send_dead_letters(batch: Batch) -> None:
        for topic, value in batch.dead_letters:
            await app.producer.send_and_wait(topic, None, value, None, None, None)

    # what Postgres refuses for a value (not an outage): a poison message is dead-lettered
    # (COPY runs on the raw psycopg cursor, so its errors come unwrapped)
    refused = (sa_exc.DataError, sa_exc.IntegrityError, psycopg.DataError, psycopg.IntegrityError)

    async def store(batch: Batch) -> int:
        return await retry_async(
            "postgres",
            functools.partial(asyncio.to_thread, write_batch, db, settings.group(GROUP), batch),
            pg_errors,
        )

    async def store_one_by_one(messages: list[tuple[str, int, int, bytes | None]]) -> int:
        """Each message in a transaction of its own; those Postgres refuses go to their
        topic's dead-letter topic with its error (nothing else stops, nothing is lost)."""
        quiet = LedgerDecoder(settings)  # its rejections were dead-lettered already
        new = 0
        for topic, partition, offset, raw in messages:
            try:
                new += await store(quiet.decode([(topic, partition, offset, raw)]))
            except refused as exc:
                counters["dlq.rejected_by_database"] += 1
                letter = dead_letter(
                    topic,
                    "rejected_by_database",
                    (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0],
                    raw or b"",
                    settings.dlq_payload_limit,
                    source="ledger",
                    partition=partition,
                    offset=offset,
                )
                await retry_async(
                    "kafka",
                    functools.partial(
                        app.producer.send_and_wait, f"{topic}.dlq", None, letter, None, None, None
                    ),
                    kafka_errors_,
                )
        return new

    # offsets are committed here after each batch is written, never by faust's acknowledgements
    # (faust acknowledges a batch whose writing failed: see commit_offsets)
    topics = (alloc_name, rates_name, billing_name, prices_name)
    read_in_batches(app, app.topic(*topics, acks=False))

    async def take(fetched: list[tuple[Any, Records]]) -> None:
        """Write one fetched batch (every topic), ``take_max`` messages a transaction."""
        messages = [(tp.topic, tp.partition, r.offset, r.value) for tp, rs in fetched for r in rs]
        for start in range(0, len(messages), settings.take_max):
            await write(messages[start : start + settings.take_max])

    # the topics are read in whole fetched batches, not through a faust stream (read_batches)
    @app.task  # type: ignore[untyped-decorator]
    @crash_on_error(app)
    async def reader() -> None:
        await read_batches(
            app,
            set(topics),
            take,
            max_records=settings.take_max,
            timeout=settings.take_within_seconds,
        )

    async def write(messages: list[tuple[str, int, int, bytes | None]]) -> None:
        """Write ``messages`` in one transaction, then commit their offsets."""
        batch = decoder.decode(messages)
        # an outage of Postgres or the broker is waited out here (backoff, /healthz
        # unhealthy): its offsets are not committed until it is written, and writing it
        # again is idempotent
        if batch.dead_letters:
            await retry_async("kafka", functools.partial(send_dead_letters, batch), kafka_errors_)
        try:
            new = await store(batch)
        except refused as exc:  # a value Postgres will not take: find it, write the rest
            log.error("a batch was refused by Postgres; writing it message by message",
                      error=repr(exc)[:500], messages=len(messages))  # fmt: skip
            new = await store_one_by_one(messages)
        if batch.offsets:  # written, so Kafka may move past it (a failed commit: later)
            await commit_offsets(app, batch.offsets)
        written_at = time.time()  # committed: the entries are in the ledger now
        for end, first in batch.bucket_ends:
            (closes if first else adjustments).observe(written_at - end)
        counters["entries.received"] += len(batch.entries)
        counters["entries.written"] += new
        counters["rates"] += len(batch.rates)
        counters["billing_lines"] += len(batch.bills)
        counters["prices"] += len(batch.prices)
        counters["counted_events"] += len(batch.counted)
        for topic, partition, marker_run in batch.markers:
            if marker_run == run_id:
                seen_markers.add((topic, partition))
        check_done()

    progress = logs.Progress("inferledger.ledger", counters)

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    @crash_on_error(app)
    async def tick() -> None:
        check_done()
        progress.tick()

    app.inferledger_counters = counters  # type: ignore[attr-defined]
    app.inferledger_collectors = [  # type: ignore[attr-defined]
        HistogramCollector(
            "inferledger_event_to_ledger_seconds",
            "from the end of an allocation's bucket (the latest an event counted in it can "
            "have finished) to the commit of its entries in Postgres; decision: close (the "
            "bucket's first) or adjustment (a late event or a bill)",
            "ledger",
            "decision",
            {"close": closes, "adjustment": adjustments},
        ),
        GaugesCollector(functools.partial(families, counters)),
    ]
    return app, done


def _partitions(settings: Settings, topic: str) -> set[int]:
    """The partitions ``topic`` has, as the broker tells now."""
    from services.runtime.kafka import make_producer

    producer = make_producer(settings)
    try:
        found = set(producer.partitions_for(topic) or set())
    finally:
        producer.close(10)
    if not found:
        raise RuntimeError(f"the broker knows no partitions of {topic}")
    return found


def families(counters: Counter[str]) -> dict[str, tuple[str, str, list[str], list[Sample]]]:
    """The ledger writer's own counters as metric families, read when Prometheus scrapes."""
    return {
        "inferledger_ledger_entries_written": (
            "counter",
            "ledger entries inserted into ledger_entries (re-delivered ones, already there, "
            "are not counted)",
            ["component"],
            [(("ledger",), float(counters["entries.written"]))],
        ),
        "inferledger_ledger_entries_received": (
            "counter",
            "ledger entries read from cost-allocations, re-deliveries included",
            ["component"],
            [(("ledger",), float(counters["entries.received"]))],
        ),
    }
