"""The attribution processor as a faust app: thin agents around :class:`AttributionProcessor`."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import faust

from services.attribution import state
from services.attribution.processor import AttributionProcessor, Output
from services.contracts.markers import heartbeat_ids
from services.ledger.db import make_engine
from services.runtime import logs
from services.runtime.config import ALLOCATIONS, BILLING, EVENTS, RATES, Settings
from services.runtime.faustapp import (
    Records,
    commit_offsets,
    committed_offsets,
    crash_on_error,
    make_app,
    pause_fetching,
    read_batches,
    read_in_batches,
)
from services.runtime.health import kafka_errors, postgres_errors, retry_async, retry_sync
from services.runtime.kafka import publish_end_markers
from services.runtime.metrics import GaugesCollector, Sample

log = logs.get(__name__)
T = TypeVar("T")


def build(
    settings: Settings, run_id: str | None = None, marker_offsets: dict[int, int] | None = None
) -> tuple[faust.App, asyncio.Event]:
    """The app, and an event set once a bounded run (``run_id``) has published everything.

    ``marker_offsets`` (events partition -> offset of the run's end marker, from ``run all``)
    let a worker of several decide a partition it takes over from its committed offset."""
    app = make_app(settings, settings.group("inferledger-attribution"))
    if not settings.database_url:
        raise ValueError("database_url is not resolved")
    db = make_engine(settings.database_url)
    # a resource's stored state comes back when its first message reaches this worker (at
    # start-up, or after a rebalance gave it the resource's partition), before that message
    pg_errors = postgres_errors()

    def durably(fn: Callable[..., T]) -> Callable[..., T]:
        """A Postgres read that waits out an outage (backoff, unhealthy) instead of failing."""

        def call(*args: Any) -> T:
            return retry_sync("postgres", functools.partial(fn, db, *args), pg_errors)

        return call

    worker_id = uuid.uuid4().hex  # the loader claims resources under it (see state.save)
    proc = AttributionProcessor(
        settings,
        run_id,
        durably(state.load_buckets),
        durably(functools.partial(state.load_resources, worker_id=worker_id)),
        durably(state.pending),
        durably(state.progress_elsewhere),
        worker_id,
        marker_offsets,
    )
    events_name, rates_name = settings.topic(EVENTS), settings.topic(RATES)
    billing_name = settings.topic(BILLING)
    alloc_name = settings.topic(ALLOCATIONS)
    # Offsets of the events topic are committed by the processor itself, after each step's
    # output is stored and published (Output.commit): faust's own commit skips a held message
    # when the one after it was acknowledged first (its gap check is off by one), and messages
    # here are released in bucket order, not offset order.
    events_topic = app.topic(events_name, acks=False)
    # no offsets are committed for rates and bills: every start re-reads those topics
    rates_topic = app.topic(rates_name, acks=False)
    billing_topic = app.topic(billing_name, acks=False)
    done = asyncio.Event()
    lock = asyncio.Lock()

    def assigned(topic: str) -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}

    kafka_errors_ = kafka_errors()

    async def send_all(out: Output) -> None:
        producer = app.producer
        futures = [
            await producer.send(alloc_name, key.encode(), value, None, None, None)
            for key, value in out.allocations
        ]
        futures += [
            await producer.send(alloc_name, key.encode(), value, None, None, None)
            for _, key, value in out.resent
        ]
        futures += [
            await producer.send(topic, None, value, None, None, None)
            for topic, value in out.dead_letters
        ]
        futures += [
            await producer.send(events_name, key.encode(), value, None, None, None)
            for key, value in out.reroutes
        ]
        if futures:
            await asyncio.gather(*futures)

    async def publish(out: Output) -> None:
        """Store, publish, forget, commit: each step waits out an outage of what it needs
        (backoff, ``/healthz`` unhealthy) and is safe to repeat after a crash at any line."""
        ids: list[int] = []
        if out.state or out.allocations or out.progress:
            ids, fenced = await retry_async(
                "postgres",
                lambda: asyncio.to_thread(
                    state.save, db, out.state, out.allocations, out.progress, worker_id
                ),
                pg_errors,
            )
            if fenced:  # another worker owns them now and decides them from storage
                proc.counters["resources.fenced"] += len(fenced)
                log.warning("decisions of resources another worker claimed were dropped",
                            resources=sorted(fenced)[:10], count=len(fenced))  # fmt: skip
                drop_fenced(out, fenced)
        await retry_async("kafka", lambda: send_all(out), kafka_errors_)
        if out.remark is not None:  # end markers of a new id, after the re-routed copies
            await retry_async(
                "kafka",
                functools.partial(
                    asyncio.to_thread, publish_end_markers, settings, [events_name], out.remark
                ),
                kafka_errors_,
            )
        for followed in out.followed:  # after this output's allocations, before the commit
            await retry_async(
                "kafka",
                functools.partial(
                    asyncio.to_thread, publish_end_markers, settings, [alloc_name], followed
                ),
                kafka_errors_,
            )
            log.info("heartbeat closed through; marker passed on", marker=followed)
        ids += [i for i, _, _ in out.resent]
        if ids:
            await retry_async("postgres", lambda: asyncio.to_thread(state.sent, db, ids), pg_errors)
        # only now may Kafka commit past these messages (a failed commit is retried later)
        commit = {(events_name, p): o for p, o in out.commit.items()}
        if commit and not await commit_offsets(app, commit):
            proc.uncommitted(out.commit)

    # Steps hand their output to one publisher task, in order, so that consuming and deciding
    # go on while Kafka acknowledges and Postgres stores the previous step's output. A bounded
    # queue is the back-pressure: at most ``publish_queue`` outputs are in flight.
    outbox: asyncio.Queue[Output] = asyncio.Queue(maxsize=settings.publish_queue)

    paused: set[int] = set()
    can_pause = settings.partition_lead_seconds > 0

    async def align(parts: set[int]) -> None:
        """Pause the events partitions running ahead of the slowest, resume the others."""
        nonlocal can_pause
        if not can_pause:
            return
        ahead = proc.ahead(parts)
        stop, go = ahead - paused, (paused - ahead) & parts
        if stop or go:
            if await pause_fetching(app, events_name, stop, go):
                paused.clear()
                paused.update(ahead)
                proc.counters["partitions.paused"] = len(paused)
                proc.counters["partitions.pauses"] += len(stop)
            else:  # warned once; correct without it, only holding more in memory
                can_pause = False
                proc.ahead(set())  # nothing is paused after all
        paused.intersection_update(parts)  # a revoked partition is no longer ours to resume

    known: set[int] = set()  # the events partitions of the previous step

    async def take_over(parts: set[int]) -> None:
        """A bounded run: partitions new to this worker are decided from their committed
        offsets (see AttributionProcessor.taken_over); asked again next step if that fails."""
        nonlocal known
        new = parts - known
        if new and run_id is not None and proc.marker_offsets:
            committed = await committed_offsets(app, events_name, new)
            if committed is None:
                return
            proc.taken_over(committed)
        known = parts

    async def step() -> None:
        async with lock:
            parts = assigned(events_name)
            if not parts:
                return
            await take_over(parts)
            await align(parts)
            out = proc.step(parts, assigned(rates_name), assigned(billing_name))
            if (
                out.allocations
                or out.resent
                or out.reroutes
                or out.remark
                or out.progress
                or out.dead_letters
                or out.state
                or out.commit
                or out.finished
                or out.followed
            ):
                await outbox.put(out)

    @app.task  # type: ignore[untyped-decorator]
    async def publisher() -> None:
        while True:
            out = await outbox.get()
            try:
                await publish(out)
            except Exception as exc:  # not an outage (those are waited out): a bug, so stop
                log.exception("publishing failed; stopping")
                await app.crash(exc)
                return
            proc.saved(out.state)
            if out.finished and run_id is not None and not done.is_set():
                # end markers that name the events partitions this worker accounted for: the
                # writer is done once the run's markers together cover every events partition
                for marker in heartbeat_ids(run_id, out.covers):
                    await retry_async(
                        "kafka",
                        functools.partial(
                            asyncio.to_thread, publish_end_markers, settings, [alloc_name], marker
                        ),
                        kafka_errors_,
                    )
                log.info("attribution finished", covers=sorted(out.covers), **dict(proc.counters))
                done.set()

    first_seen = False
    on_events, on_rate, on_billing = proc.on_events, proc.on_rate, proc.on_billing

    async def take(batch: list[tuple[Any, Records]]) -> None:
        """One fetched batch of every topic: hand each message to the processor, then step."""
        nonlocal first_seen
        if not first_seen:
            first_seen = True
            log.info("first message consumed", at=time.time())
        for tp, records in batch:
            topic, partition = tp.topic, tp.partition
            if topic == events_name:
                for r in records:
                    on_events(r.value, None, partition, r.offset, key=r.key)
            else:  # rates and bills: read from the start on every start (nothing committed)
                handle = on_rate if topic == rates_name else on_billing
                for r in records:
                    handle(r.value, partition, r.offset)
        await step()

    # All three topics are read in whole fetched batches, not through faust streams (a faust
    # Stream costs about 100 to 160 µs a message before any work): see read_batches.
    read_in_batches(app, events_topic, rates_topic, billing_topic)

    @app.task  # type: ignore[untyped-decorator]
    @crash_on_error(app)
    async def attribute() -> None:
        await read_batches(
            app,
            {events_name, rates_name, billing_name},
            take,
            max_records=settings.take_max,
            timeout=settings.take_within_seconds,
        )

    progress = logs.Progress("inferledger.attribution", proc.counters)

    @app.timer(interval=0.5)  # type: ignore[untyped-decorator]
    @crash_on_error(app)
    async def tick() -> None:
        await step()
        progress.tick()

    app.inferledger_processor = proc  # type: ignore[attr-defined]
    app.inferledger_counters = proc.counters  # type: ignore[attr-defined]  # for /metrics
    app.inferledger_collectors = [GaugesCollector(functools.partial(families, proc))]  # type: ignore[attr-defined]
    return app, done


def drop_fenced(out: Output, fenced: set[str]) -> None:
    """A save fenced these resources off (another worker claimed them, and decides them from
    storage): their decisions in ``out`` are not published. Nor does a bounded run finish on
    it: its end markers would name the partitions of those resources as accounted for here,
    and the ledger writer would finish before the new owner's decisions are written; the next
    step's output finishes, with the partitions this worker still has."""
    out.allocations = [a for a in out.allocations if a[0] not in fenced]
    if fenced:
        out.finished = False


def families(proc: AttributionProcessor) -> dict[str, tuple[str, str, list[str], list[Sample]]]:
    """The attribution processor's own metric families, read when Prometheus scrapes."""
    component = "attribution"
    topic = proc.events_topic
    marks = proc.watermark.per_partition()
    through = proc.closed_through_us
    counters = proc.counters
    return {
        "inferledger_watermark_seconds": (
            "gauge",
            "per events partition: the latest finished_at seen minus allowed lateness (Unix "
            "seconds), the event time up to which that partition lets buckets close",
            ["component", "topic", "partition"],
            [((component, topic, str(p)), us / 1e6) for p, us in sorted(marks.items())],
        ),
        "inferledger_closed_through_seconds": (
            "gauge",
            "event time (Unix seconds) through which this worker has closed buckets",
            ["component"],
            [] if through is None else [((component,), through / 1e6)],
        ),
        "inferledger_buckets_closed": (
            "counter",
            "bucket decisions published: close (a bucket's first: usage and idle entries) or "
            "adjustment (a late event or a bill changed a closed bucket)",
            ["component", "decision"],
            [
                ((component, "close"), float(counters["buckets.closed"])),
                ((component, "adjustment"), float(counters["buckets.adjusted"])),
            ],
        ),
    }
