"""Streaming state of the accounting core: open and closed buckets per resource.

A :class:`Book` is fed requests, rates and billing lines in any order. Open buckets close when
told how far event time has progressed; a closed bucket that later learns something (a late
request, a billing line, a rate) is recomputed and the difference is returned as
``late_adjustment`` or ``reconciliation`` entries: nothing already written is ever changed.
The Book does no I/O; its closed state can be exported and restored (``take_dirty``/``restore``)
so that the process around it can keep it durable.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from services.accounting.buckets import bucket_ceil, bucket_floor, nano_weights, work_nanos
from services.accounting.entries import adjustment_entries, entry_order, initial_entries
from services.accounting.facts import BucketFacts
from services.accounting.model import AccountingSettings, Bill, Entry, Rate, Request
from services.accounting.pricing import BucketCost, bucket_cost
from services.accounting.seen import (
    DELETED,
    SeenIndex,
    content_digest,
    digest_of,
    event_key,
    last_bucket,
    pack,
)
from services.accounting.shares import Position, PositionKey, positions
from services.accounting.slo import CANCELLED, FAILED, WITHIN, request_class


def _class_without_objectives(req: Request) -> int:
    """:func:`request_class` when no model has an objective: by status alone (per event)."""
    status = req.status
    return WITHIN if status == "ok" else CANCELLED if status == "cancelled" else FAILED


class Added(Enum):
    ACCEPTED = "accepted"
    LATE = "late"  # accepted into buckets that had closed: late_adjustment entries
    DUPLICATE = "duplicate"  # the same event again (same id and content): nothing changes
    CONFLICT = "conflict"  # an accepted id again with other content: refused (the first wins)
    TOO_LATE = "too_late"  # beyond the late horizon: rejected


@dataclass(frozen=True)
class ClosedBucket:
    """Entries decided for one bucket in one step (a first close or an adjustment)."""

    resource_id: str
    bucket_start_us: int
    entries: list[Entry]
    counted: list[tuple[str, str]] = field(default_factory=list)  # (event_id, status) counted


@dataclass
class Closed:
    """A closed bucket: its facts and what the ledger holds for it."""

    facts: BucketFacts
    positions: dict[PositionKey, Position]

    def to_data(self) -> dict[str, Any]:
        return {
            "facts": self.facts.to_data(),
            "positions": [
                [*key, self.positions[key].to_data()]
                for key in sorted(self.positions, key=entry_order)
            ],
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Closed:
        return cls(
            BucketFacts.from_data(data["facts"]),
            {(t, m, c): Position.from_data(p) for t, m, c, p in data["positions"]},
        )


Loader = Callable[[str, list[int]], dict[int, dict[str, Any]]]
"""``(resource_id, bucket starts) -> {bucket start: data}``: closed buckets evicted from memory,
as :meth:`Book.take_dirty` exported them (missing keys: nothing was stored for that bucket)."""


def rate_key(rate: Rate) -> str:
    text = f"{rate.resource_id}|{rate.start_us}|{rate.end_us}|{rate.price_per_hour}|{rate.currency}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Resource:
    rates: list[Rate] = field(default_factory=list)
    bills: dict[str, Bill] = field(default_factory=dict)
    open: dict[int, BucketFacts] = field(default_factory=dict)
    closed: dict[int, Closed] = field(default_factory=dict)
    next_open_us: int | None = None  # every bucket before this one is closed
    last_event_us: int | None = None
    evicted_before_us: int | None = None  # closed buckets before this may be out of memory
    ever_closed: bool = False

    @property
    def known(self) -> bool:
        """A GPU resource: it has a rate or traffic (a bill alone does not make one)."""
        return bool(self.rates) or self.last_event_us is not None or self.ever_closed


class Book:
    """Open and closed buckets of many resources.

    With a ``loader``, closed buckets more than ``settings.resident_seconds`` behind the
    watermark leave memory once exported by :meth:`take_dirty` (the caller stores them), and are
    loaded back when a late event, a rate or a bill touches them: memory then depends on the
    event-time window, not on how many events went through.
    """

    def __init__(self, settings: AccountingSettings, loader: Loader | None = None) -> None:
        self.settings = settings
        self._loader = loader
        self._resources: dict[str, _Resource] = defaultdict(_Resource)
        self.max_event_us: int | None = None
        self._dirty: set[tuple[str, int]] = set()
        self._new_inputs: list[tuple[str, str, str, dict[str, Any]]] = []
        self._bucket_us = settings.bucket_us
        self._nano_weights: dict[str, tuple[int, int, int]] = {}  # per model
        slos, default_slo = settings.slos, settings.slos.get("*")
        self._slo_class: Callable[[Request], int] = (
            (lambda req: request_class(req, slos, default_slo))
            if slos
            else _class_without_objectives
        )
        # every accepted event id, wherever its buckets lie (see add_request and _prune)
        self._seen = SeenIndex()

    # -- input ---------------------------------------------------------------------------
    def add_rate(self, rate: Rate) -> list[ClosedBucket]:
        res = self._resources[rate.resource_id]
        if rate in res.rates:
            return []
        res.rates.append(rate)
        self._new_inputs.append(
            (
                rate.resource_id,
                "rate",
                rate_key(rate),
                {
                    "start": rate.start_us,
                    "end": rate.end_us,
                    "price": str(rate.price_per_hour),
                    "currency": rate.currency,
                },
            )
        )
        W = self.settings.bucket_us
        start = bucket_floor(rate.start_us, W)
        if res.next_open_us is None or (not res.ever_closed and start < res.next_open_us):
            res.next_open_us = start  # nothing closed yet: its buckets close in order
            return []
        # buckets already closed (or passed over) that the rate covers are priced again
        end = (
            res.next_open_us
            if rate.end_us is None
            else min(bucket_ceil(rate.end_us, W), res.next_open_us)
        )
        horizon = self._horizon(self.settings.billing_horizon_seconds)
        first = start if horizon is None else max(start, bucket_floor(horizon, W))
        return self._recompute(
            rate.resource_id, list(range(first, end, W)), "reconciliation", f"rate:{rate_key(rate)}"
        )

    def add_bill(self, bill: Bill) -> list[ClosedBucket]:
        """A billed usage line: closed buckets it covers are reconciled to it."""
        res = self._resources[bill.resource_id]
        if bill.line_id in res.bills or bill.end_us <= bill.start_us:
            return []
        res.bills[bill.line_id] = bill
        self._new_inputs.append(
            (
                bill.resource_id,
                "bill",
                bill.line_id,
                {
                    "start": bill.start_us,
                    "end": bill.end_us,
                    "cost": str(bill.cost),
                    "currency": bill.currency,
                },
            )
        )
        if not res.known or res.next_open_us is None:
            return []
        W = self.settings.bucket_us
        first = bucket_floor(bill.start_us, W)
        if not res.ever_closed and first < res.next_open_us:
            res.next_open_us = first  # nothing closed yet: its buckets close in order
            return []
        end = min(bucket_ceil(bill.end_us, W), res.next_open_us)
        horizon = self._horizon(self.settings.billing_horizon_seconds)
        touched = [b for b in range(first, end, W) if horizon is None or b >= horizon]
        return self._recompute(bill.resource_id, touched, "reconciliation", f"line:{bill.line_id}")

    def add_request(self, req: Request) -> tuple[Added, list[ClosedBucket]]:
        """Add one request to the buckets it spans.

        An event id is looked up in the Book's index of accepted ids (:class:`SeenIndex`),
        not only in the buckets this copy touches: a copy whose content (times, tokens,
        tenant, model, status, resource, GPUs) differs from the first copy's is a
        ``CONFLICT`` and changes nothing, wherever the first copy's buckets lie. An identical
        copy is a ``DUPLICATE``, unless some of its buckets lack it (they were open when the
        process stopped, the others closed and stored): it is then added to those only, so a
        message read again after a restart completes what was lost and counts nothing twice.
        An id is remembered until its last bucket falls behind the late horizon, when every
        bucket of its first copy is final: a copy touching them is ``TOO_LATE``.
        """
        res = self._resources[req.resource_id]
        W = self._bucket_us
        start, end = req.start_us, req.end_us
        first = start - start % W  # bucket_floor (per event: no call)
        buckets = range(first, end - end % W + W, W)  # request_buckets
        if res.evicted_before_us is not None and first < res.evicted_before_us:
            self._fetch(req.resource_id, buckets)  # (indexes their event ids)
        key = hash(req.event_id) or 1  # event_key (per event: no call)
        digest = content_digest(req)
        seen = self._seen
        slot = seen.find(key)
        if seen.key_at(slot):
            value = seen.value_at(slot)
            if value != DELETED:
                return self._again(req, res, buckets, value & 0xFFFFFFFF, digest)
        nxt = res.next_open_us
        late = [] if nxt is None or first >= nxt else [b for b in buckets if b < nxt]
        if late:
            horizon = self._horizon(self.settings.late_horizon_seconds)
            if horizon is not None and late[0] < horizon:
                # an id forgotten with its final buckets (see _prune) is still a duplicate
                # where those buckets are in memory
                if any(self._holds(res, b, req.event_id) for b in buckets):
                    return Added.DUPLICATE, []
                return Added.TOO_LATE, []
        value = (end // W << 32) | digest  # pack(), inline
        if not -(2**62) < value < 2**62:  # far outside any real time: clamped
            value = pack(end // W, digest)
        if seen.key_at(slot):  # a deleted entry of this id: taken over
            seen.put(key, value)
        else:
            seen.insert_at(slot, key, value)
        return self._add(req, res, buckets, late)

    def _holds(self, res: _Resource, b: int, event_id: str) -> bool:
        facts = res.open.get(b)
        if facts is None:
            state = res.closed.get(b)
            if state is None:
                return False
            facts = state.facts
        return event_id in facts.event_ids

    def _again(
        self, req: Request, res: _Resource, buckets: range, first_digest: int, digest: int
    ) -> tuple[Added, list[ClosedBucket]]:
        """A copy of an accepted event id (``first_digest``: its first copy's content)."""
        if first_digest and first_digest != digest:
            return Added.CONFLICT, []
        missing = [b for b in buckets if not self._holds(res, b, req.event_id)]
        if not first_digest:  # content unknown (stored before digests): where does it lie?
            return (Added.CONFLICT if len(missing) == len(buckets) else Added.DUPLICATE), []
        if not missing:
            return Added.DUPLICATE, []
        nxt = res.next_open_us
        late = [] if nxt is None else [b for b in missing if b < nxt]
        horizon = self._horizon(self.settings.late_horizon_seconds)
        if late and horizon is not None and late[0] < horizon:
            # buckets behind the late horizon are final: the copy adds nothing there
            late = [b for b in late if b >= horizon]
            missing = [b for b in missing if b >= horizon or (nxt is not None and b >= nxt)]
            if not missing:
                return Added.DUPLICATE, []
        return self._add(req, res, missing, late)

    def _add(
        self, req: Request, res: _Resource, buckets: range | list[int], late: list[int]
    ) -> tuple[Added, list[ClosedBucket]]:
        if res.next_open_us is None:
            res.next_open_us = buckets[0]
        weights = self._nano_weights.get(req.model)
        if weights is None:
            weights = self._nano_weights[req.model] = nano_weights(
                self.settings.weights_for(req.model)
            )
        work = work_nanos(req, weights)
        cls = self._slo_class(req)
        W = self._bucket_us
        open_ = res.open
        for b in buckets:
            if late and b in late:
                continue
            facts = open_.get(b)
            if facts is None:
                facts = open_[b] = BucketFacts(b)
            facts.add(req, work, W, cls)
        end = req.end_us
        if res.last_event_us is None or end > res.last_event_us:
            res.last_event_us = end
        if self.max_event_us is None or end > self.max_event_us:
            self.max_event_us = end
        if not late:
            return Added.ACCEPTED, []
        changes = self._recompute(
            req.resource_id, late, "late_adjustment", req.event_id, add=(req, work, cls)
        )
        return Added.LATE, changes

    # -- time ----------------------------------------------------------------------------
    def watermark_us(self) -> int | None:
        """Event time up to which every bucket may close: latest finish minus allowed lateness."""
        if self.max_event_us is None:
            return None
        return self.max_event_us - self.settings.lateness_us

    def _horizon(self, seconds: int) -> int | None:
        wm = self.watermark_us()
        return None if wm is None else wm - seconds * 1_000_000

    def advance(self, until_us: int | None = None) -> list[ClosedBucket]:
        """Close every bucket of every resource that ends at or before ``until_us``.

        ``until_us`` defaults to the watermark. Buckets without traffic close too when the
        resource has a rate or a bill for them (idle cost).
        """
        limit = self.watermark_us() if until_us is None else until_us
        if limit is None:
            return []
        end = bucket_floor(limit, self.settings.bucket_us)
        closed: list[ClosedBucket] = []
        for resource_id in sorted(self._resources):
            closed.extend(self._close(resource_id, end))
        self._prune()
        if self._loader is not None:
            self._evict(bucket_floor(limit - self.settings.resident_us, self.settings.bucket_us))
        return closed

    def flush(self, elsewhere_us: int | None = None) -> list[ClosedBucket]:
        """Close everything the bounded input determines (``run --until-idle``).

        Each resource closes up to the end of its latest finite rate or bill or, for an
        open-ended rate, up to the latest event time in the whole input (this Book's, or
        ``elsewhere_us``, how far other workers closed, when that is later: a worker whose
        partitions carry no traffic still closes its rated nodes' idle buckets); a resource
        with traffic and no rate closes up to its own last event.
        """
        W = self.settings.bucket_us
        closed: list[ClosedBucket] = []
        for resource_id in sorted(self._resources):
            res = self._resources[resource_id]
            if not res.known:
                continue
            ends = [bucket_floor(b.end_us - 1, W) + W for b in res.bills.values()]
            if res.last_event_us is not None:
                ends.append(bucket_floor(res.last_event_us, W) + W)
            for rate in res.rates:
                if rate.end_us is not None:
                    ends.append(bucket_ceil(rate.end_us, W))
                else:
                    if self.max_event_us is not None:
                        ends.append(bucket_floor(self.max_event_us, W) + W)
                    if elsewhere_us is not None:
                        ends.append(bucket_floor(elsewhere_us, W))
            if ends:
                closed.extend(self._close(resource_id, max(ends)))
        return closed

    # -- closing and recomputing ----------------------------------------------------------
    def _cost(self, res: _Resource, b: int) -> BucketCost:
        W = self.settings.bucket_us
        bills = [x for x in res.bills.values() if x.start_us < b + W and x.end_us > b]
        return bucket_cost(res.rates, bills, b, b + W, self.settings.default_currency)

    def _close(self, resource_id: str, end_us: int) -> list[ClosedBucket]:
        res = self._resources[resource_id]
        if res.next_open_us is None or res.next_open_us >= end_us:
            return []
        W = self.settings.bucket_us
        closed: list[ClosedBucket] = []
        b = res.next_open_us
        while b < end_us:
            facts = res.open.pop(b, None)
            if facts is not None or self._priced(res, b):
                facts = facts or BucketFacts(b)
                cost = self._cost(res, b)
                pos = positions(facts, cost, self.settings)
                res.closed[b] = Closed(facts, pos)
                res.ever_closed = True
                self._dirty.add((resource_id, b))
                entries = initial_entries(resource_id, b, self.settings, pos, cost)
                counted = sorted(facts.finished.items())
                facts.finished.clear()  # published with this decision: no need to keep them
                closed.append(ClosedBucket(resource_id, b, entries, counted))
                b += W
                continue
            # nothing here: skip to the next bucket with traffic, a rate or a bill
            candidates = [k for k in res.open if k > b]
            nxt = self._next_priced(res, b, end_us)
            if nxt is not None:
                candidates.append(nxt)
            b = min(min(candidates, default=end_us), end_us)
        res.next_open_us = b
        return closed

    def _recompute(
        self,
        resource_id: str,
        buckets: list[int],
        kind: str,
        trigger: str,
        add: tuple[Request, int, int] | None = None,
    ) -> list[ClosedBucket]:
        res = self._resources[resource_id]
        self._fetch(resource_id, buckets)
        out: list[ClosedBucket] = []
        for b in sorted(buckets):
            state = res.closed.get(b)
            if state is None:  # closed with nothing in it (no traffic, no price): now it has
                state = Closed(BucketFacts(b), {})
            facts = state.facts  # updated in place: the old positions are kept below
            if add is not None:
                facts.add(add[0], add[1], self.settings.bucket_us, add[2])
            cost = self._cost(res, b)
            new = positions(facts, cost, self.settings)
            entries = adjustment_entries(
                resource_id, b, self.settings, state.positions, new, kind, cost, trigger
            )
            res.closed[b] = Closed(facts, new)
            res.ever_closed = True
            self._dirty.add((resource_id, b))
            counted = []
            if add is not None and add[0].event_id in facts.finished:
                counted = [(add[0].event_id, add[0].status)]
            facts.finished.clear()
            if entries or counted:
                out.append(ClosedBucket(resource_id, b, entries, counted))
        return out

    def _priced(self, res: _Resource, b: int) -> bool:
        W = self.settings.bucket_us
        if any(r.start_us < b + W and (r.end_us is None or r.end_us > b) for r in res.rates):
            return True
        return res.known and any(x.start_us < b + W and x.end_us > b for x in res.bills.values())

    def _next_priced(self, res: _Resource, b: int, end_us: int) -> int | None:
        W = self.settings.bucket_us
        starts = [
            max(b + W, bucket_floor(r.start_us, W))
            for r in res.rates
            if r.end_us is None or r.end_us > b + W
        ]
        if res.known:
            starts += [
                max(b + W, bucket_floor(x.start_us, W))
                for x in res.bills.values()
                if x.end_us > b + W
            ]
        starts = [s for s in starts if s < end_us]
        return min(starts, default=None)

    def _prune(self) -> None:
        """Forget closed buckets beyond every horizon (they can no longer change).

        Event ids whose last bucket is behind the late horizon leave the index at its next
        rebuild: every bucket of their first copy is then final, so a copy touching one of
        them is refused as too late (or found a duplicate there, while it is in memory), and
        a copy lying wholly after the horizon is a new event (ids are unique within the late
        horizon, 7 days by default)."""
        late = self._horizon(self.settings.late_horizon_seconds)
        if late is not None:
            self._seen.expire_before = late // self.settings.bucket_us
        keep = max(self.settings.late_horizon_seconds, self.settings.billing_horizon_seconds)
        horizon = self._horizon(keep)
        if horizon is None:
            return
        for res in self._resources.values():
            for b in [b for b in res.closed if b < horizon]:
                del res.closed[b]

    # -- memory ------------------------------------------------------------------------
    def _evict(self, before_us: int) -> None:
        """Drop closed buckets before ``before_us`` that have been exported (not dirty)."""
        for resource_id, res in self._resources.items():
            old = [b for b in res.closed if b < before_us and (resource_id, b) not in self._dirty]
            for b in old:
                del res.closed[b]
            if res.ever_closed and (
                res.evicted_before_us is None or before_us > res.evicted_before_us
            ):
                res.evicted_before_us = before_us

    def _fetch(self, resource_id: str, buckets: Iterable[int]) -> None:
        """Load evicted closed buckets among ``buckets`` back into memory."""
        res = self._resources[resource_id]
        if self._loader is None or res.evicted_before_us is None:
            return
        keep = max(self.settings.late_horizon_seconds, self.settings.billing_horizon_seconds)
        horizon = self._horizon(keep)  # older ones were forgotten anyway (see _prune)
        missing = [
            b
            for b in buckets
            if b < res.evicted_before_us
            and b not in res.closed
            and (horizon is None or b >= horizon)
        ]
        if missing:
            for b, data in self._loader(resource_id, missing).items():
                res.closed[b] = Closed.from_data(data)
                self._remember(b, data)

    @property
    def resident_buckets(self) -> int:
        """Open and closed buckets in memory (what memory use grows with)."""
        return sum(len(r.open) + len(r.closed) for r in self._resources.values())

    def evicted(self, resource_id: str, before_us: int) -> None:
        """Tell the Book that closed buckets before ``before_us`` were not restored."""
        res = self._resources[resource_id]
        if res.evicted_before_us is None or before_us > res.evicted_before_us:
            res.evicted_before_us = before_us

    def forget(self, resource_ids: Iterable[str]) -> None:
        """Drop everything about these resources: another worker owns them now.

        What they had decided and exported is in the caller's storage, and the messages not yet
        acknowledged go to the new owner, so nothing of theirs is lost: the new owner restores
        them from storage and reads on from the last committed offset."""
        gone = set(resource_ids)
        for resource_id in gone:
            res = self._resources.pop(resource_id, None)
            if res is None:
                continue
            # ids not in storage (open or unexported buckets) are the new owner's to accept:
            # this Book must not take a copy for a duplicate if the resources come back
            unsaved = [f.event_ids for f in res.open.values()] + [
                c.facts.event_ids for b, c in res.closed.items() if (resource_id, b) in self._dirty
            ]
            for ids in unsaved:
                for event_id in ids:
                    self._seen.discard(event_key(event_id))
        self._dirty = {d for d in self._dirty if d[0] not in gone}
        self._new_inputs = [i for i in self._new_inputs if i[0] not in gone]

    def resources(self) -> list[str]:
        return list(self._resources)

    def closed_through(self) -> int | None:
        """How far in event time this Book has closed buckets: the latest resource's first open
        bucket (the audit expects every rated bucket before it in the ledger)."""
        ends = [r.next_open_us for r in self._resources.values() if r.ever_closed]
        return max((e for e in ends if e is not None), default=None)

    # -- the index of accepted event ids -------------------------------------------------
    def remember(self, resource_id: str, key: str, data: dict[str, Any]) -> None:
        """Index the event ids of a stored closed bucket (as :meth:`take_dirty` exported it)
        without keeping the bucket in memory.

        At start-up the caller restores the recent buckets (:meth:`restore`) and passes the
        others within the late horizon here, so that a copy of an event whose buckets stay in
        storage is still found."""
        del resource_id  # one index for all resources (an id is unique across them)
        self._remember(int(key), data)

    def _remember(self, bucket_start_us: int, data: dict[str, Any]) -> None:
        facts = data["facts"]
        events: list[str] = facts["events"]
        digests: list[int] = facts.get("digests") or [0] * len(events)
        here = bucket_start_us // self.settings.bucket_us
        seen = self._seen
        for event_id, digest in zip(events, digests, strict=True):
            k = event_key(event_id)
            old = seen.get(k)
            if old is None:
                seen.put(k, pack(here, digest))
            elif last_bucket(old) < here or (digest and not digest_of(old)):
                seen.put(k, pack(max(here, last_bucket(old)), digest_of(old) or digest))

    # -- durability -----------------------------------------------------------------------
    def take_dirty(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """What changed since the last call, as ``(resource_id, kind, key, data)``.

        ``kind`` is ``rate``, ``bill`` or ``bucket`` (a closed bucket); :meth:`restore` takes
        the same tuples back. Storing them makes the Book survive a restart.
        """
        out = list(self._new_inputs)
        self._new_inputs.clear()
        seen = self._seen
        for resource_id, b in sorted(self._dirty):
            state = self._resources[resource_id].closed.get(b)
            if state is not None:
                data = state.to_data()
                facts = data["facts"]  # each id's content digest, as the index holds it
                facts["digests"] = seen.digests(facts["events"])
                out.append((resource_id, "bucket", str(b), data))
        self._dirty.clear()
        return out

    def _restored_start(self, res: _Resource, start_us: int) -> None:
        """A restored rate or bill of a resource with nothing closed yet: its buckets close in
        order from its start, as when :meth:`add_rate` or :meth:`add_bill` first read it (the
        same input read again after a restart is known already and changes nothing there)."""
        first = bucket_floor(start_us, self.settings.bucket_us)
        if res.next_open_us is None or (not res.ever_closed and first < res.next_open_us):
            res.next_open_us = first

    def restore(self, resource_id: str, kind: str, key: str, data: dict[str, Any]) -> None:
        """Put back what :meth:`take_dirty` exported (at start-up: inputs before buckets)."""
        res = self._resources[resource_id]
        if kind == "rate":
            rate = Rate(
                resource_id,
                int(data["start"]),
                data["end"],
                Decimal(data["price"]),
                data["currency"],
            )
            if rate not in res.rates:
                res.rates.append(rate)
            self._restored_start(res, rate.start_us)
            return
        if kind == "bill":
            bill = Bill(
                key,
                resource_id,
                int(data["start"]),
                int(data["end"]),
                Decimal(data["cost"]),
                data["currency"],
            )
            res.bills[key] = bill
            if res.known and res.next_open_us is not None and bill.end_us > bill.start_us:
                self._restored_start(res, bill.start_us)
            return
        bucket_start_us = int(key)
        res.closed[bucket_start_us] = Closed.from_data(data)
        self._remember(bucket_start_us, data)
        res.ever_closed = True
        W = self.settings.bucket_us
        nxt = bucket_start_us + W
        if res.next_open_us is None or nxt > res.next_open_us:
            res.next_open_us = nxt
        horizon_end = nxt + self.settings.lateness_us
        if self.max_event_us is None or horizon_end > self.max_event_us:
            self.max_event_us = horizon_end
