"""Factory for faust apps, and running one in-process until a condition or a signal."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.runtime import logs
from services.runtime.config import Settings

log = logs.get(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the fetch wait we configure instead of its fixed 1.5 s.

    A broker answers a fetch when ``fetch_min_bytes`` (1) arrive or the wait ends; Apache Kafka
    answers as soon as data arrives, but some brokers (Tansu here) hold every fetch for the
    whole wait, which put up to 1.5 s on each hop of the pipeline."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "inferledger_fetch_max_wait_ms", None)
        if wait is not None:
            if hasattr(consumer, "_fetch_max_wait_ms"):  # read by AIOKafkaConsumer.start()
                consumer._fetch_max_wait_ms = wait
            else:
                log.warning("cannot set the consumer's fetch wait", aiokafka=type(consumer))
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: Any) -> int | None:
        """The offset faust may commit from acknowledged messages: only a run of acknowledged
        offsets that starts exactly at the committed one (faust-streaming 0.15 commits past an
        unacknowledged message at the committed offset, and anything when nothing or 0 was
        committed). The processors commit their own offsets (:func:`commit_offsets`) and
        acknowledge nothing; this keeps faust's own path safe should a topic ever use it."""
        acked = self._acked[tp]
        committed = self._committed_offset[tp]  # faust keeps None for "none" and for 0
        if not acked or committed is None:
            return None
        acked.sort()
        if acked[0] != committed:
            return None  # the message at the committed offset is not acknowledged yet
        end = 0
        while end + 1 < len(acked) and acked[end + 1] == acked[end] + 1:
            end += 1
        run = acked[: end + 1]
        del acked[: end + 1]
        self._acked_index[tp].difference_update(run)
        return int(run[-1]) + 1

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        """faust's own fetch, without the partitions of topics read in whole batches
        (:func:`read_batches`): those records stay in aiokafka until the batch reader takes them."""
        skip = getattr(self.app, "inferledger_batch_topics", None)
        if skip and active_partitions is not None:
            active_partitions = {tp for tp in active_partitions if tp.topic not in skip}
            if not active_partitions:  # nothing of faust's own to fetch: wait like faust does
                await asyncio.sleep(min(timeout, 1.0))
                return {}
        return await super()._getmany(active_partitions, timeout)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    inferledger_fetch_max_wait_ms: int | None = None
    #: topics read in whole fetched batches by :func:`read_batches`, not by faust's streams
    inferledger_batch_topics: frozenset[str] = frozenset()
    inferledger_batch_channels: tuple[Any, ...] = ()

    async def on_start(self) -> None:
        await super().on_start()
        # subscribed here, in the running loop (the conductor makes a future on add), before
        # the consumer starts: faust subscribes what its streams iterate, and none does these
        for topic in self.inferledger_batch_channels:
            self.topics.add(topic)

    #: the offsets :func:`commit_offsets` committed, {(topic, partition): offset} (for /metrics)
    inferledger_committed: dict[tuple[str, int], int]

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def make_app(settings: Settings, app_id: str, **overrides: Any) -> faust.App:
    """A faust app for one processor; nothing connects until it starts."""
    if not settings.kafka_bootstrap:
        raise ValueError("kafka_bootstrap is not resolved")
    brokers = ";".join(f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(","))
    session = settings.session_timeout_seconds
    conf: dict[str, Any] = {
        "broker": brokers,
        "store": "memory://",
        "web_enabled": False,
        "datadir": tempfile.mkdtemp(prefix=f"{app_id}-"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": False,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(session / 6, 0.5),
        "broker_rebalance_timeout": max(session * 2, 10),
        "broker_commit_interval": 1.0,
        "producer_max_request_size": max(settings.max_message_bytes * 2, 1_048_576),
        "producer_acks": -1,
        "consumer_max_fetch_size": settings.fetch_bytes_per_partition,
        "stream_buffer_maxsize": settings.stream_buffer_messages,
        "stream_wait_empty": False,
        # an agent that fails stops the app (faust's default restarts it in a live process,
        # after acknowledging the batch that failed)
        "agent_supervisor": "mode.CrashingSupervisor",
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    credentials = broker_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    conf.update(overrides)
    app = _App(app_id, **conf)
    app.inferledger_fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.inferledger_committed = {}
    return app


Records = list[Any]
"""aiokafka ``ConsumerRecord`` objects of one partition, in offset order."""


def read_in_batches(app: faust.App, *topics: Any) -> None:
    """Subscribe ``app`` to ``topics`` (faust topics) for :func:`read_batches`: faust keeps the
    group membership, rebalances and the consumer, but its own fetch skips them."""
    if not isinstance(app, _App):
        raise TypeError("read_in_batches needs an app made by make_app")
    app.inferledger_batch_channels += topics
    app.inferledger_batch_topics |= {name for topic in topics for name in topic.topics}


async def read_batches(
    app: faust.App,
    topics: set[str],
    handle: Callable[[list[tuple[Any, Records]]], Awaitable[None]],
    *,
    max_records: int,
    timeout: float,
) -> None:
    """Read ``topics`` in whole fetched batches and hand each to ``handle`` as
    ``[(TopicPartition, records)]`` (up to ``max_records`` a partition), one call per fetch,
    until the app stops.

    faust's per-message path (a ``Stream``, an ``Event`` and a callback per message) costs
    about 100 to 160 µs a message before any work is done; here a fetch of hundreds of messages
    costs one call. The safety of faust's own fetch is kept: nothing is read while faust has
    stopped the flow for a rebalance, only partitions faust has not paused are fetched, and a
    fetch that spans a new generation is not handed on but put back (:func:`_put_back`), so
    nothing in it is skipped. Nothing is acknowledged or committed here: ``handle`` commits,
    after its output is stored."""
    consumer: Any = app.consumer
    thread = getattr(consumer, "_thread", None)
    if thread is None or not hasattr(thread, "_fetch_records"):
        raise RuntimeError("cannot read in batches: no aiokafka consumer thread")
    turn = 0
    while not app.should_stop:
        if not consumer.flow_active:  # a rebalance is on: faust resumes the flow after it
            await consumer.wait(consumer.can_resume_flow)
            continue
        active = consumer._get_active_partitions()
        tps = {tp for tp in active if tp.topic in topics}
        if not tps:
            await asyncio.sleep(timeout)
            continue
        generation = app.consumer_generation_id
        order = sorted(tps)
        turn = (turn + 1) % len(order)
        records = await thread.call_thread(
            _fetch_fairly,
            thread,
            thread._ensure_consumer(),
            order[turn:] + order[:turn],
            timeout,
            max_records,
        )
        if not records:
            continue
        if app.consumer_generation_id != generation or not consumer.flow_active:
            # a rebalance: these may be records of the new assignment, fetched after faust's
            # seek to the committed offsets (aiokafka waits out a reassignment inside the
            # fetch), and aiokafka's position has passed them: put them back
            await thread.call_thread(_put_back, thread._ensure_consumer(), records)
            continue
        owned = consumer.assignment()
        batch = [(tp, recs) for tp, recs in records.items() if recs and tp in owned]
        if batch:
            await handle(batch)


async def _fetch_fairly(
    thread: Any, consumer: Any, tps: list[Any], timeout: float, max_records: int
) -> dict[Any, Records]:
    """What aiokafka has fetched for ``tps``: up to ``max_records`` of each, every partition
    in turn (run in the consumer's thread, as faust's own ``_fetch_records``). aiokafka alone
    stops at ``max_records`` in all, draining one partition before the next, so one partition
    ran ahead of the others and a step saw a few of its messages at a time; taking what is
    there of each is what faust's round robin did. The records are in aiokafka's memory
    already (at most ``fetch_bytes_per_partition`` a partition). Waits up to ``timeout`` for
    records when none are there."""
    from aiokafka.errors import ConsumerStoppedError

    if not thread.consumer.flow_active:
        return {}
    fetcher = consumer._fetcher
    if consumer._closed or fetcher._closed:
        raise ConsumerStoppedError()
    with fetcher._subscriptions.fetch_context():
        drained: dict[Any, Records] = {}
        for tp in tps:
            drained.update(await fetcher.fetched_records((tp,), 0, max_records))
        if drained:
            return drained
        return dict(await fetcher.fetched_records(tuple(tps), timeout, max_records))


async def _put_back(consumer: Any, records: dict[Any, Records]) -> None:
    """Seek each partition of dropped ``records`` back to their first offset, if aiokafka's
    position has passed it (run in the consumer's thread). Only ever backwards: reading a
    record again changes nothing, skipping one loses it."""
    owned = consumer.assignment()
    for tp, recs in records.items():
        if not recs or tp not in owned:
            continue
        state = consumer._subscription.subscription.assignment.state_value(tp)
        if state is not None and state.has_valid_position and state.position > recs[0].offset:
            consumer.seek(tp, recs[0].offset)


def kafka_consumer(app: faust.App) -> Any:
    """The app's aiokafka consumer, or None while it does not exist (for /metrics: read-only;
    never creates the faust consumer from the metrics thread)."""
    thread = getattr(getattr(app, "_consumer", None), "_thread", None)
    return getattr(thread, "_consumer", None)


def lag_collector(component: str, app: faust.App) -> Any:
    """Consumer lag of ``app`` per topic and partition, for ``/metrics``."""
    from services.runtime.metrics import ConsumerLagCollector

    committed = getattr(app, "inferledger_committed", None)
    if committed is None:
        committed = {}
    return ConsumerLagCollector(component, lambda: kafka_consumer(app), committed)


def broker_credentials(settings: Settings) -> Any:
    """The TLS/SASL settings as faust credentials (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if "SSL" in protocol:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    if "SASL" in protocol:
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=None if password is None else password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def crash_on_error(app: faust.App) -> Callable[[F], F]:
    """An agent or timer that fails takes its process down, with a non-zero exit: faust would
    log the error and go on without that agent, a process that looks alive and does nothing.
    (Outages of Postgres and the broker are waited out inside, with backoff; what reaches here
    is a bug, and a supervisor restarting the process from the committed offsets is safe.)"""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("agent failed; stopping the process", agent=fn.__name__)
                fatal = getattr(app, "inferledger_fatal", None)
                if fatal is not None and not fatal.done():
                    fatal.set_exception(exc)  # run_until raises it: the process exits non-zero
                await app.crash(exc)
                raise

        return cast(F, guarded)

    return wrap


async def pause_fetching(app: faust.App, topic: str, pause: set[int], resume: set[int]) -> bool:
    """Pause and resume fetching of partitions in the aiokafka consumer itself.

    Not faust's ``consumer.pause_partitions``: faust drops records of a partition it paused
    that were already fetched (the consumer's position has passed them, so they would be lost
    until a restart). aiokafka keeps its position at the first record it has not returned, so
    nothing is skipped. Uses faust's private consumer thread; False (and a warning) if that is
    not there."""
    thread = getattr(app.consumer, "_thread", None)
    if thread is None or not hasattr(thread, "_ensure_consumer"):
        log.warning("cannot pause partitions: no aiokafka consumer thread")
        return False
    consumer = thread._ensure_consumer()

    async def apply() -> None:
        owned = consumer.assignment()  # a partition revoked meanwhile is not ours to touch
        stop = [tp for p in sorted(pause) if (tp := TopicPartition(topic, p)) in owned]
        go = [tp for p in sorted(resume) if (tp := TopicPartition(topic, p)) in owned]
        if stop:
            consumer.pause(*stop)
        if go:
            consumer.resume(*go)

    await thread.call_thread(apply)
    return True


async def commit_offsets(app: faust.App, offsets: Mapping[tuple[str, int], int]) -> bool:
    """Commit these next-offsets ``{(topic, partition): offset}`` for the partitions this
    worker still owns, in the aiokafka consumer itself.

    The processors commit their offsets this way, never through faust's acknowledgements:
    faust computes the offset from acknowledged messages and went past a held message whose
    successor was acknowledged first; it acknowledges a batch whose processing failed (in
    ``take_events``' ``finally``); and it crashes the app on a commit error. Here a failed
    commit is logged and reported False, and the caller commits again later (an offset not
    committed only means that some input is read again, which changes nothing)."""
    from aiokafka.structs import OffsetAndMetadata

    thread = getattr(app.consumer, "_thread", None)
    if thread is None or not hasattr(thread, "_ensure_consumer"):
        raise RuntimeError("cannot commit offsets: no aiokafka consumer thread")
    consumer = thread._ensure_consumer()

    async def apply() -> None:
        owned = consumer.assignment()  # a partition revoked meanwhile is another's to commit
        mine = {
            tp: OffsetAndMetadata(o, "")
            for (t, p), o in offsets.items()
            if (tp := TopicPartition(t, p)) in owned
        }
        if mine:
            await consumer.commit(mine)
            record = getattr(app, "inferledger_committed", None)
            if record is not None:  # for /metrics: what a restart would read again
                for tp, done in mine.items():
                    record[tp.topic, tp.partition] = done.offset

    try:
        await thread.call_thread(apply)
    except Exception as exc:  # a rebalance or an outage: the next step commits again
        log.warning("offset commit failed; will retry", error=repr(exc)[:300])
        return False
    return True


async def committed_offsets(
    app: faust.App, topic: str, partitions: set[int]
) -> dict[int, int | None] | None:
    """The offsets the consumer group has committed for these partitions of ``topic`` (None
    for a partition without one), asked of the broker through the aiokafka consumer itself;
    None when asking failed (a rebalance or an outage: ask again later)."""
    thread = getattr(app.consumer, "_thread", None)
    if thread is None or not hasattr(thread, "_ensure_consumer"):
        raise RuntimeError("cannot read committed offsets: no aiokafka consumer thread")
    consumer = thread._ensure_consumer()

    async def ask() -> dict[int, int | None]:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}

    try:
        return cast(dict[int, int | None], await thread.call_thread(ask))
    except Exception as exc:
        log.warning("reading committed offsets failed; will retry", error=repr(exc)[:300])
        return None


def tune_gc(settings: Settings) -> None:
    """Collect young objects less often, and keep everything loaded so far (modules, the app)
    out of every later collection. The processors make many short-lived, acyclic objects per
    event; with Python's default threshold the collector ran for about 40 % of their time."""
    if settings.gc_gen0_threshold:
        gc.collect()
        gc.freeze()
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)


async def run_until(app: faust.App, done: asyncio.Event | None) -> None:
    """Start ``app``, wait for ``done`` (or SIGINT/SIGTERM), then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    fatal: asyncio.Future[None] = loop.create_future()
    app.inferledger_fatal = fatal  # type: ignore[attr-defined]  # set by crash_on_error
    await app.start()
    failed: BaseException | None = None
    try:
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait()), fatal]
        if done is not None:
            waiters.append(asyncio.ensure_future(done.wait()))
        crashed = asyncio.ensure_future(app.wait_until_stopped())
        waiters.append(crashed)
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            if w is not fatal:
                w.cancel()
        if fatal.done():
            failed = fatal.exception()
        elif app.crash_reason is not None:
            failed = app.crash_reason
        if failed is not None:
            raise RuntimeError(f"processor crashed: {failed!r}") from failed
    finally:  # nothing to commit here: the processors commit their own offsets as they go
        with contextlib.suppress(Exception):
            await asyncio.wait_for(app.stop(), 30)
