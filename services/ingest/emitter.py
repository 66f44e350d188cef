"""The emitter SDK: record inference events from a serving process without slowing it down.

    from services.ingest import Emitter

    emitter = Emitter()                      # settings from INFERLEDGER_* (broker, TLS, SASL)
    emitter.record({"event_id": ..., ...})   # never blocks; False when the event was not queued

``record`` validates the event and puts it on a bounded in-memory queue; a background thread
groups queued events per resource into batch messages (up to ``max_batch_events`` events or
``max_message_bytes``, or whatever is pending after ``linger_seconds``) and sends them with
kafka-python (compressed, ``acks=all``, retried). When the queue is full the event is dropped
and counted (``stats["dropped_full"]``): a metering side path must never stall the requests it
meters. An invalid event is not raised into the caller: it is counted and sent to the events
dead-letter topic with the reason. ``close()`` (also run at interpreter exit) flushes what is
queued.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from pydantic import ValidationError

from services.contracts import InferenceEvent, dumps, encode_event_batch
from services.contracts.wire import BATCH_SEPARATOR
from services.runtime import logs
from services.runtime.config import EVENTS, Settings, load_settings
from services.runtime.kafka import dead_letter, make_producer

log = logs.get(__name__)
_STOP = object()
_FLUSH = "flush"


def _close_at_exit(ref: weakref.ReferenceType[Emitter]) -> None:
    emitter = ref()
    if emitter is not None:
        emitter.close(timeout=10)


class Emitter:
    """Batches events per resource and sends them to the events topic in the background."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        buffer_events: int = 100_000,
        linger_seconds: float = 1.0,
        max_batch_events: int | None = None,
        compression: str | None = "gzip",
        retries: int = 10,
        producer: KafkaProducer | None = None,
        source: str = "emitter",
    ) -> None:
        self.settings = settings or load_settings()
        if not self.settings.kafka_bootstrap:
            raise ValueError("no broker: set INFERLEDGER_KAFKA_BOOTSTRAP (or pass settings)")
        self.topic = self.settings.topic(EVENTS)
        self.linger = linger_seconds
        self.max_events = max_batch_events or self.settings.max_batch_events
        self.max_bytes = self.settings.max_message_bytes
        self.source = source
        self.stats: Counter[str] = Counter()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=buffer_events)
        self._producer = producer or make_producer(
            self.settings,
            compression_type=compression,
            retries=retries,
            linger_ms=5,
            client_id=f"inferledger-{source}",
        )
        self._lock = threading.Lock()  # stats are updated from two threads
        self._closed = False
        self._flushed = threading.Condition()
        self._flush_seq = 0
        self._done_seq = 0
        self._thread = threading.Thread(target=self._run, name="inferledger-emitter", daemon=True)
        self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- the caller's side: never blocks ----------------------------------------------------
    def record(self, event: InferenceEvent | Mapping[str, Any], block: bool = False) -> bool:
        """Queue one event; True when queued, False when invalid or the buffer is full.

        ``block=True`` waits for room instead of dropping: for backfills and replays, never on
        a request path."""
        if self._closed:
            self._count("dropped_closed")
            return False
        if not isinstance(event, InferenceEvent):
            try:
                event = InferenceEvent.model_validate(event)
            except ValidationError as exc:
                self._count("rejected_invalid")
                self._dead_letter("invalid", str(exc), dict(event))
                return False
        try:
            self._queue.put(event, block=block)
        except queue.Full:
            self._count("dropped_full")
            return False
        self._count("recorded")
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Send everything queued so far and wait for the broker's acknowledgement."""
        with self._flushed:
            self._flush_seq += 1
            target = self._flush_seq
        try:
            self._queue.put((_FLUSH, target), timeout=timeout)
        except queue.Full:
            return False
        with self._flushed:
            return self._flushed.wait_for(lambda: self._done_seq >= target, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop; later ``record`` calls return False."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        self._producer.close(timeout)

    # -- the background thread --------------------------------------------------------------
    def _run(self) -> None:
        pending: dict[str, list[bytes]] = defaultdict(list)
        sizes: dict[str, int] = defaultdict(int)
        oldest: float | None = None
        while True:
            timeout = None if oldest is None else max(0.0, oldest + self.linger - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP or isinstance(item, tuple):
                self._send_all(pending, sizes)
                self._producer.flush()
                oldest = None
                if not isinstance(item, tuple):
                    return
                with self._flushed:
                    self._done_seq = item[1]
                    self._flushed.notify_all()
                continue
            if item is None:  # linger elapsed
                self._send_all(pending, sizes)
                oldest = None
                continue
            raw = dumps(item)
            r = item.resource_id
            if pending[r] and (
                len(pending[r]) >= self.max_events or sizes[r] + len(raw) > self.max_bytes
            ):
                self._send(r, pending.pop(r))
                sizes.pop(r, None)
            pending[r].append(raw)
            sizes[r] += len(raw) + BATCH_SEPARATOR
            if oldest is None:
                oldest = time.monotonic()

    def _send_all(self, pending: dict[str, list[bytes]], sizes: dict[str, int]) -> None:
        for r in sorted(pending):
            self._send(r, pending[r])
        pending.clear()
        sizes.clear()

    def _send(self, resource_id: str, items: list[bytes]) -> None:
        n = len(items)
        try:
            future = self._producer.send(
                self.topic, key=resource_id, value=encode_event_batch(resource_id, items)
            )
        except Exception as exc:  # buffer full past max_block_ms, or the producer is closed
            self._count("send_errors", n)
            log.error("emitter could not send a batch", error=repr(exc), events=n)
            return
        future.add_callback(lambda _: self._count("sent", n))
        future.add_errback(lambda exc: self._failed(exc, n))  # partial(f, n)(exc) swapped them

    def _failed(self, exc: BaseException, n: int) -> None:
        self._count("send_errors", n)
        log.error("emitter batch failed after retries", error=repr(exc), events=n)

    def _dead_letter(self, reason: str, detail: str, payload: Any) -> None:
        self._count(f"dlq.{reason}")
        record = dead_letter(
            self.topic, reason, detail, payload, self.settings.dlq_payload_limit, source=self.source
        )
        with contextlib.suppress(Exception):
            self._producer.send(f"{self.topic}.dlq", value=record)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n
