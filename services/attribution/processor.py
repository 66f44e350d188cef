"""The attribution step without faust: decode, feed the accounting core, decide what to emit.

The faust agent around it only moves bytes. Messages are held (not acknowledged) until every
bucket they touch has closed and its allocation was published, so the committed Kafka offset
is always a safe restart point: nothing accepted can be lost by a crash.
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from services.accounting import (
    Added,
    Book,
    ClosedBucket,
    Loader,
    from_us,
    to_us,
)
from services.attribution.encode import (
    allocation_messages,
    to_bill,
    to_rate,
    to_request,
)
from services.attribution.settings import accounting_settings
from services.attribution.watermark import Watermark
from services.contracts import (
    DecodeError,
    EndOfInput,
    InferenceEvent,
    Limits,
    check_clock,
    decode_billing,
    decode_events,
    decode_rate,
)
from services.contracts.fast import EventRecord, event_records
from services.contracts.fast import to_builtins as record_data
from services.contracts.markers import MAX_RUN_ID, heartbeat_ids
from services.runtime import logs
from services.runtime.config import Settings
from services.runtime.kafka import dead_letter

log = logs.get(__name__)


class _Unchecked:
    """The key of a message is not checked (a caller without keys, such as a unit test)."""


UNCHECKED = _Unchecked()
_ADDED_KEY = {a: f"events.{a.value}" for a in Added}  # counter names, formatted once
_FIRST_KINDS = frozenset(("usage", "idle"))  # entry kinds of a bucket's first decision


ResourceLoader = Callable[[Book, list[str]], int]
"""``(book, resource ids) -> items restored``: puts back into the Book what storage holds for
resources this worker has just come to own (``state.load_resources``)."""

OutboxLoader = Callable[[list[str]], list[tuple[int, str, bytes]]]
"""``(resource ids) -> [(outbox id, resource id, allocation message)]``: allocations stored
for these resources but maybe never published (``state.pending``)."""


@dataclass
class Output:
    """What one processing step wants published, and which held messages it releases."""

    allocations: list[tuple[str, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)
    release: list[Any] = field(default_factory=list)
    state: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    # events partition -> the offset Kafka may commit once this output is published: every
    # message before it was released (its buckets closed and their allocations are in this
    # output or an earlier one). Never past a held message, whatever order messages release in.
    commit: dict[int, int] = field(default_factory=dict)
    # allocations stored in the outbox by a run that crashed before Kafka had them:
    # (outbox id, resource id, message), published again (same entry ids: no double count)
    resent: list[tuple[int, str, bytes]] = field(default_factory=list)
    # messages of the events topic whose key was not their resource id: (resource id, value),
    # published again to the events topic under the right key
    reroutes: list[tuple[str, bytes]] = field(default_factory=list)
    # a bounded run re-routed messages: publish end markers of this id to the events topic
    # after them (the run waits for these, not the ones already there)
    remark: str | None = None
    # (worker id, event time) this worker has closed buckets through, stored with the state
    progress: tuple[str, datetime] | None = None
    finished: bool = False
    # a bounded run, finished: the events partitions this worker's end markers speak for
    covers: set[int] = field(default_factory=set)
    # streaming: runs whose end markers this worker has closed through (heartbeats, see
    # EndOfInput): pass their markers on to cost-allocations once this output is published
    followed: list[str] = field(default_factory=list)


class AttributionProcessor:
    """Per worker: one :class:`Book` for all resources of the partitions it owns."""

    def __init__(
        self,
        settings: Settings,
        run_id: str | None = None,
        loader: Loader | None = None,
        resource_loader: ResourceLoader | None = None,
        outbox_loader: OutboxLoader | None = None,
        progress_loader: Callable[[str], int | None] | None = None,
        worker_id: str | None = None,
        marker_offsets: dict[int, int] | None = None,
    ) -> None:
        self.settings = settings
        self._outbox_loader = outbox_loader
        # (this worker's id) -> how far the other workers have closed buckets (event time, µs)
        self._progress_loader = progress_loader
        self._elsewhere_at: tuple[float, int | None] = (float("-inf"), None)
        self._loader = loader
        self._resource_loader = resource_loader
        # the resources this worker owns, and the partition each came on (a rebalance that takes
        # the partition away hands them to another worker: see _hand_over)
        self._owner: dict[str, int] = {}
        # closed buckets handed over for storing but not yet confirmed stored (see saved())
        self._unsaved: dict[tuple[str, int], dict[str, Any]] = {}
        self.book = Book(accounting_settings(settings), None if loader is None else self._load)
        self.run_id = run_id
        self.events_topic = settings.topic("inference-events")
        self.rates_topic = settings.topic("gpu-rates")
        self.billing_topic = settings.topic("gpu-billing")
        self.allocated = frozenset(c.lower() for c in settings.allocated_charge_categories)
        self._changes: list[ClosedBucket] = []  # adjustments decided while reading input
        self.watermark = Watermark(
            self.book.settings.lateness_us,
            settings.idle_partition_seconds,
            settings.partition_lead_seconds,
            no_traffic=self._elsewhere,
        )
        self.counters: Counter[str] = Counter()
        self._out = Output()
        # (release when closed through, seq, partition, offset, token)
        self._held: list[tuple[int, int, int, int, Any]] = []
        # per events partition: a heap of the offsets held, and the offsets released from
        # _held but not yet popped from that heap (the oldest held offset without a scan)
        self._held_offsets: dict[int, list[int]] = {}
        self._released: dict[int, Counter[int]] = {}
        self._next_offset: dict[int, int] = {}  # per events partition: after the latest read
        self._emitted: dict[int, int] = {}  # per events partition: the latest offset to commit
        # claims resources in Postgres (fencing) and names this worker's attribution_progress
        self.worker_id = worker_id or uuid.uuid4().hex
        self._progress: int | None = None  # the closed-through time last handed over
        self.wall_clock = time.time  # judges events from the future (a wrong clock on a node)
        self._limits = Limits.from_settings(settings)
        self._seq = itertools.count()
        self._markers: set[tuple[str, int]] = set()
        self._events_marker = run_id  # the end marker that drains the events topic
        # a bounded run: events partition -> the offset of the run's end marker on it (from
        # `run all`), to decide partitions taken over from another worker (see taken_over)
        self.marker_offsets = dict(marker_offsets or {})
        self._flushed = False
        self._flush_seq = -1  # messages held before the latest flush (lower seq) it released
        self._closed_until = -(2**62)
        # streaming: run id -> (heartbeat time µs, the input partitions its markers were seen on)
        self._heartbeats: dict[str, tuple[int, set[tuple[str, int]]]] = {}

    # -- input -------------------------------------------------------------------------
    def _reject(
        self,
        topic: str,
        reason: str,
        detail: str,
        payload: Any,
        partition: int | None,
        offset: int | None,
    ) -> None:
        self.counters[f"dlq.{reason}"] += 1
        self._out.dead_letters.append(
            (
                f"{topic}.dlq",
                dead_letter(
                    topic,
                    reason,
                    detail,
                    payload,
                    self.settings.dlq_payload_limit,
                    source="attribution",
                    partition=partition,
                    offset=offset,
                ),
            )
        )

    def on_events(
        self,
        raw: bytes | None,
        token: Any,
        partition: int,
        offset: int,
        key: bytes | None | _Unchecked = UNCHECKED,
    ) -> None:
        """One message of the events topic. ``key`` is the message's key: a message whose key
        is not its resource id may sit on a partition that another worker's resource hashes
        to, so it is never accounted here but published again under its resource id."""
        topic = self.events_topic
        if offset >= self._next_offset.get(partition, 0):
            self._next_offset[partition] = offset + 1
        if raw is None:  # a tombstone carries no event: counted and skipped (DESIGN.md s. 2)
            self.counters["tombstones"] += 1
            self._out.release.append(token)
            return
        events: list[InferenceEvent] | list[EventRecord] | None = None
        if isinstance(raw, bytes):
            events = event_records(raw, self._limits)  # fast path; None: the full decoder
            if events and self._reroute(raw, events[0].resource_id, key):
                self._out.release.append(token)
                return
        if events is None:
            try:
                decoded = decode_events(raw, self._limits)
            except DecodeError as exc:
                self._reject(topic, exc.reason, exc.detail, raw, partition, offset)
                self._out.release.append(token)
                return
            if decoded.events and self._reroute(raw, decoded.events[0].resource_id, key):
                self._out.release.append(token)  # the owner dead-letters what is invalid
                return
            for rej in decoded.rejected:
                self._reject(topic, rej.reason, rej.detail, rej.payload, partition, offset)
            if decoded.end_of_input is not None:
                self._on_marker(topic, partition, decoded.end_of_input)
            events = decoded.events
        if events:  # one node with a wrong clock must never move the watermark into the future
            events, ahead = check_clock(
                cast(list[Any], events), self.wall_clock(), self.settings.max_future_seconds
            )
            for rej in ahead:
                self._reject(topic, rej.reason, rej.detail, rej.payload, partition, offset)
        if events:
            self._own({e.resource_id for e in events}, partition)
        W = self.book.settings.bucket_us
        add_request = self.book.add_request
        no_end = -(2**62)
        latest = self.watermark.latest(partition)
        if latest is None:
            latest = no_end
        newest = no_end  # latest finish among the events accepted here
        accepted = 0
        seen = False  # besides those accepted
        for event in events:
            req = to_request(event)
            added, changes = add_request(req)
            if added is Added.ACCEPTED:  # the common case first (per event)
                accepted += 1
                end = req.end_us
                if end > newest:
                    newest = end
                if end > latest:
                    latest = end
                continue
            self.counters[_ADDED_KEY[added]] += 1
            if changes:
                self._changes.extend(changes)
            if added is Added.CONFLICT:
                self._reject(
                    topic,
                    "duplicate_conflict",
                    "event_id already accepted with other content (the first copy wins)",
                    record_data(event)
                    if isinstance(event, EventRecord)
                    else event.model_dump(mode="json"),
                    partition,
                    offset,
                )
                continue
            if added is Added.TOO_LATE:
                self._reject(
                    topic,
                    "too_late",
                    "its bucket is beyond the late horizon "
                    f"({self.settings.late_horizon_seconds} s behind the watermark)",
                    record_data(event)
                    if isinstance(event, EventRecord)
                    else event.model_dump(mode="json"),
                    partition,
                    offset,
                )
                continue
            seen = True  # a duplicate too tells how far in event time the partition is
            end = req.end_us
            if end > latest:
                latest = end
            if added is Added.LATE and end > newest:
                newest = end
        if accepted:
            self.counters[_ADDED_KEY[Added.ACCEPTED]] += accepted
        if accepted or seen:
            self.watermark.saw(partition, latest)
        if newest == no_end:
            self._out.release.append(token)
        else:  # held until the bucket its latest counts go to has closed
            until = newest - newest % W + W
            heapq.heappush(self._held, (until, next(self._seq), partition, offset, token))
            heapq.heappush(self._held_offsets.setdefault(partition, []), offset)

    def _reroute(self, raw: bytes | str, resource_id: str, key: bytes | None | _Unchecked) -> bool:
        """Publish a mis-keyed message again under its resource id (all events of a message
        share one resource); True when it was (then nothing of it is accounted here)."""
        if isinstance(key, _Unchecked):
            return False
        want = resource_id.encode()
        if key == want:
            return False
        self.counters["events.rerouted"] += 1
        self._out.reroutes.append((resource_id, raw if isinstance(raw, bytes) else raw.encode()))
        if self.run_id is not None:
            # a bounded run: the copy lands after the end markers already on the topic, so the
            # publisher writes markers of a new id after it, and only those count from now on
            # (an old marker still unread must not let the run finish before the copy is read)
            self._events_marker = f"{self.run_id}+rerouted.{self.counters['events.rerouted']}"
            self._markers = {m for m in self._markers if m[0] != self.events_topic}
            self._out.remark = self._events_marker
        return True

    def _reference(
        self, decode: Any, topic: str, raw: bytes | None, partition: int, offset: int
    ) -> Any:
        """Decode a rates or billing message; markers and rejects are handled here (None)."""
        if raw is None:  # a tombstone carries nothing: counted and skipped
            self.counters["tombstones"] += 1
            return None
        try:
            msg = decode(raw)
        except DecodeError as exc:
            self._reject(topic, exc.reason, exc.detail, raw, partition, offset)
            return None
        if isinstance(msg, EndOfInput):
            self._on_marker(topic, partition, msg)
            return None
        return msg

    def on_rate(self, raw: bytes | None, partition: int, offset: int) -> None:
        rate = self._reference(decode_rate, self.rates_topic, raw, partition, offset)
        if rate is not None:
            self.counters["rates"] += 1
            self._own((rate.resource_id,), partition)
            self._changes.extend(self.book.add_rate(to_rate(rate)))

    def on_billing(self, raw: bytes | None, partition: int, offset: int) -> None:
        line = self._reference(decode_billing, self.billing_topic, raw, partition, offset)
        if line is None:
            return
        bill = to_bill(line, self.allocated)
        if bill is None:
            self.counters["billing.unallocated"] += 1
            return
        self.counters["billing.allocated"] += 1
        self._own((bill.resource_id,), partition)
        self._changes.extend(self.book.add_bill(bill))

    # -- ownership -------------------------------------------------------------------------
    def _own(self, resource_ids: Iterable[str], partition: int) -> None:
        """Resources reaching this worker on ``partition``: the first time, what storage holds
        for them (rates, bills, closed buckets) comes back into the Book before their input."""
        owner = self._owner
        new = [r for r in resource_ids if r not in owner]
        if not new:
            return
        # owned only once loaded: a load that fails (raises) is tried again with the next message
        if self._resource_loader is not None:
            self.counters["state.restored"] += self._resource_loader(self.book, sorted(new))
        if self._outbox_loader is not None:
            resent = self._outbox_loader(sorted(new))
            self.counters["outbox.resent"] += len(resent)
            self._out.resent.extend(resent)
        for r in new:
            owner[r] = partition
        self.counters["resources.owned"] = len(owner)

    def _hand_over(self, assigned: set[int]) -> None:
        """Forget the resources of partitions this worker no longer has (a rebalance gave them
        to another worker). Their held messages are never acknowledged here: the new owner
        reads them again from the last committed offset, restores the resources from storage
        and decides the same entries (same ids), so the ledger counts nothing twice. Keeping
        them would close their buckets here too, as idle, beside the new owner's usage.

        A bounded run also forgets the end markers it read on those partitions: should one
        come back, what it holds is decided again (read to the marker, or :meth:`taken_over`)."""
        self._markers = {m for m in self._markers if m[0] != self.events_topic or m[1] in assigned}
        gone = {r for r, p in self._owner.items() if p not in assigned}
        if not gone:
            return
        parts = {self._owner[r] for r in gone}
        self.book.forget(gone)
        for r in gone:
            del self._owner[r]
        self._changes = [c for c in self._changes if c.resource_id not in gone]
        self._held = [h for h in self._held if h[2] not in parts]
        heapq.heapify(self._held)
        for p in parts:
            self._next_offset.pop(p, None)
            self._emitted.pop(p, None)
            self._held_offsets.pop(p, None)
            self._released.pop(p, None)
        self.watermark.forget(parts)
        self.counters["resources.handed_over"] += len(gone)
        self.counters["resources.owned"] = len(self._owner)
        log.info(
            "resources handed over",
            resources=len(gone),
            partitions=sorted(parts),
            still_owned=len(self._owner),
        )

    def _on_marker(self, topic: str, partition: int, marker: EndOfInput) -> None:
        if self.run_id is None:
            self._on_heartbeat(topic, partition, marker)
            return
        want = self._events_marker if topic == self.events_topic else self.run_id
        if marker.run_id == want:
            self._markers.add((topic, partition))

    def _on_heartbeat(self, topic: str, partition: int, marker: EndOfInput) -> None:
        """Streaming: a marker stamped ``at`` says everything before it on this partition was
        sent by ``at``. Once its run's markers are on every input partition of this worker,
        the watermark moves as if an event had finished at ``at`` (see step)."""
        if marker.at is None:  # an old marker: nothing to go by
            self.counters["markers.ignored"] += 1
            return
        if len(marker.run_id) > MAX_RUN_ID:  # its passed-on ids would not be valid ids
            self.counters["markers.ignored"] += 1
            log.warning("a heartbeat marker with a run id too long to pass on was ignored",
                        length=len(marker.run_id), limit=MAX_RUN_ID, topic=topic)  # fmt: skip
            return
        at_us = to_us(marker.at)
        now_us = int(self.wall_clock() * 1_000_000)
        if at_us > now_us + int(self.settings.max_future_seconds * 1_000_000):
            # a wrong clock must never move the watermark into the future (as for events)
            self.counters["markers.future"] += 1
            log.warning("a heartbeat marker from the future was ignored",
                        run_id=marker.run_id, at=marker.at.isoformat(), topic=topic)  # fmt: skip
            return
        self.counters["markers.heartbeat"] += 1
        at_us = min(at_us, now_us)
        if marker.run_id not in self._heartbeats and len(self._heartbeats) >= 1000:
            del self._heartbeats[next(iter(self._heartbeats))]  # never completed: forget the oldest
        self._heartbeats.setdefault(marker.run_id, (at_us, set()))[1].add((topic, partition))

    def _beat(self, events: set[int], rates: set[int], billing: set[int]) -> list[tuple[str, int]]:
        """Heartbeats whose markers are on every input partition: each events partition's
        latest time moves to the heartbeat's. Returns (run id, bucket start the watermark must
        have closed through) for each."""
        if not self._heartbeats:
            return []
        need = {(self.events_topic, p) for p in events}
        need |= {(self.rates_topic, p) for p in rates}
        need |= {(self.billing_topic, p) for p in billing}
        due = []
        W = self.book.settings.bucket_us
        for run_id, (at_us, seen) in list(self._heartbeats.items()):
            if not need <= seen:
                continue
            del self._heartbeats[run_id]
            for p in events:
                self.watermark.saw(p, at_us)
            through = at_us - self.book.settings.lateness_us
            due.append((run_id, (through // W) * W))
        return due

    def taken_over(self, committed: dict[int, int | None]) -> set[int]:
        """A bounded run: events partitions this worker has just been given, with the offsets
        the consumer group committed for them. A committed offset past the run's end marker
        (``marker_offsets``) says that a worker read the partition to its marker and released
        every message before it (a message is released once its buckets closed and their
        allocations were published, and only released messages are committed past), so the
        partition counts as drained here without reading it again; at or before the marker,
        the marker is still to come and this worker reads on to it. Returns the partitions
        drained so."""
        done = set()
        for p, offset in committed.items():
            marker = self.marker_offsets.get(p)
            if offset is not None and marker is not None and offset > marker:
                self._markers.add((self.events_topic, p))
                done.add(p)
        if done:
            self.counters["partitions.taken_over_drained"] += len(done)
            log.info("partitions taken over after the run's end marker: accounted for already",
                     partitions=sorted(done), committed={p: committed[p] for p in sorted(done)},
                     markers={p: self.marker_offsets[p] for p in sorted(done)})  # fmt: skip
        return done

    # -- progress ----------------------------------------------------------------------
    def drained(self, topic: str, partitions: set[int]) -> bool:
        return all((topic, p) in self._markers for p in partitions)

    def step(
        self,
        events_partitions: set[int],
        rates_partitions: set[int],
        billing_partitions: set[int] | None = None,
    ) -> Output:
        """Close what may close, and hand over everything to publish, persist and release."""
        self._hand_over(events_partitions)
        bounded = self.run_id is not None
        if self._flushed and not self.drained(self.events_topic, events_partitions):
            # a rebalance gave this worker a partition whose marker is still to come: its
            # input is accounted by flushing again once it is drained
            self._flushed = False
        rates_ready = not bounded or (
            self.drained(self.rates_topic, rates_partitions)
            and self.drained(self.billing_topic, billing_partitions or set())
        )
        closed: list[ClosedBucket] = self._changes
        self._changes = []
        beats = [] if bounded else self._beat(events_partitions, rates_partitions,
                                              billing_partitions or set())  # fmt: skip
        if rates_ready and not self._flushed:
            wm = self.watermark_us(events_partitions)
            if wm is not None:
                closed += self.book.advance(wm)
                W_us = self.book.settings.bucket_us
                self._closed_until = max(self._closed_until, (wm // W_us) * W_us)
            if bounded and self.drained(self.events_topic, events_partitions):
                closed += self.book.flush(self._elsewhere())
                self._flushed = True
                self._flush_seq = next(self._seq)
        W = self.settings.bucket_seconds
        counters = self.counters
        for c in closed:
            counters["allocations"] += 1
            # a bucket's first decision has usage or idle entries; a later one (a late event,
            # a bill) only late_adjustment or reconciliation entries
            if any(e.entry_kind in _FIRST_KINDS for e in c.entries):
                counters["buckets.closed"] += 1
            else:
                counters["buckets.adjusted"] += 1
            for message in allocation_messages(c, W):
                self._out.allocations.append((c.resource_id, message))
        self._out.state = self.book.take_dirty()
        through = self.book.closed_through()
        if through is not None and through != self._progress:
            self._progress = through
            self._out.progress = (self.worker_id, from_us(through))
        for resource_id, kind, key, data in self._out.state:
            if kind == "bucket":
                self._unsaved[resource_id, int(key)] = data
        for run_id, through in beats:
            if self._closed_until >= through:
                self._out.followed += heartbeat_ids(run_id, events_partitions)
            else:  # cannot happen: the heartbeat moved the watermark past it
                log.error("a heartbeat did not close its buckets", run_id=run_id)
        self._release_closed()
        self._out.commit = self._safe_offsets(events_partitions)
        out, self._out = self._out, Output()
        # messages still held now were read after the flush: past the run's end markers, they
        # are left to the next run (not committed), and do not keep this one from finishing
        out.finished = self._flushed
        if out.finished:
            out.covers = set(events_partitions)
        return out

    def saved(self, items: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """The state of a step's output is stored: evicted buckets may now be loaded from it."""
        for resource_id, kind, key, data in items:
            if kind == "bucket" and self._unsaved.get((resource_id, int(key))) is data:
                del self._unsaved[resource_id, int(key)]

    def _load(self, resource_id: str, starts: list[int]) -> dict[int, dict[str, Any]]:
        """The Book's loader: buckets still on their way to storage first, then storage."""
        found = {
            b: self._unsaved[resource_id, b] for b in starts if (resource_id, b) in self._unsaved
        }
        rest = [b for b in starts if b not in found]
        if rest and self._loader is not None:
            found.update(self._loader(resource_id, rest))
        return found

    @property
    def clock(self) -> Callable[[], float]:
        """Monotonic time: of the watermark's idle and lead judgements, and of _elsewhere."""
        return self.watermark.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.watermark.clock = clock

    def _drained_events(self, partitions: set[int]) -> set[int]:
        return {p for p in partitions if (self.events_topic, p) in self._markers}

    def ahead(self, partitions: set[int]) -> set[int]:
        """Events partitions to pause (see :meth:`Watermark.ahead`)."""
        return self.watermark.ahead(partitions, self._drained_events(partitions))

    @property
    def closed_through_us(self) -> int | None:
        """Event time (µs) through which this worker has closed buckets, None before any."""
        return None if self._closed_until == -(2**62) else self._closed_until

    def watermark_us(self, partitions: set[int]) -> int | None:
        """Event time up to which buckets may close (see :meth:`Watermark.of`)."""
        return self.watermark.of(partitions, self._drained_events(partitions))

    def _elsewhere(self) -> int | None:
        """How far other workers have closed buckets (asked at most every 5 s): the watermark
        of a worker whose partitions carry no traffic, whose rated nodes still cost idle money
        (without it they would never close on a worker with no events)."""
        if self._progress_loader is None:
            return None
        now = self.clock()
        if now - self._elsewhere_at[0] >= 5:
            self._elsewhere_at = (now, self._progress_loader(self.worker_id))
        return self._elsewhere_at[1]

    def _safe_offsets(self, partitions: set[int]) -> dict[int, int]:
        """Per events partition, the offset up to which every message was released: the
        oldest held message's, or the one after the latest read when nothing is held."""
        safe = {p: o for p, o in self._next_offset.items() if p in partitions}
        for p in safe:
            heap = self._held_offsets.get(p)
            if not heap:
                continue
            released = self._released.get(p)
            while heap and released:  # drop the released offsets from the top
                n = released.get(heap[0])
                if not n:
                    break
                if n == 1:
                    del released[heap[0]]
                else:
                    released[heap[0]] = n - 1
                heapq.heappop(heap)
            if heap and heap[0] < safe[p]:
                safe[p] = heap[0]
        new = {p: o for p, o in safe.items() if o > self._emitted.get(p, -1)}
        self._emitted.update(new)
        return new

    def uncommitted(self, offsets: dict[int, int]) -> None:
        """A commit of these offsets failed: offer them again with the next step."""
        for p, o in offsets.items():
            if self._emitted.get(p) == o:
                del self._emitted[p]

    def _release_closed(self) -> None:
        if self._flushed:
            # the flush closed every bucket of what was read before it; a message read since
            # (after the run's end markers) waits for a bucket the flush did not close
            keep = []
            for held in self._held:
                if held[1] < self._flush_seq or self._closed_until >= held[0]:
                    self._release(held)
                else:
                    keep.append(held)
            if len(keep) < len(self._held):
                heapq.heapify(keep)
                self._held = keep
            return
        while self._held:
            if self._closed_until < self._held[0][0]:
                break
            self._release(heapq.heappop(self._held))

    def _release(self, held: tuple[int, int, int, int, Any]) -> None:
        """A held message may go: its offset no longer holds the partition's commit back."""
        _, _, partition, offset, token = held
        if partition in self._held_offsets:
            self._released.setdefault(partition, Counter())[offset] += 1
        self._out.release.append(token)
