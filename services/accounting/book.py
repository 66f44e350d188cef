"""Streaming state of the accounting core: open buckets per resource, closed by a watermark.

A :class:`Book` is fed requests and rates in any order and closes buckets when told how far
event time has progressed. It never does I/O; the attribution processor around it decodes
messages, asks it to close buckets and publishes what it returns.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum

from services.accounting.arithmetic import (
    allocate_bucket,
    bucket_ceil,
    bucket_floor,
    request_buckets,
)
from services.accounting.model import AccountingSettings, Entry, Rate, Request


class Added(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True)
class ClosedBucket:
    resource_id: str
    bucket_start_us: int
    entries: list[Entry]


@dataclass
class _Resource:
    rates: list[Rate] = field(default_factory=list)
    open: dict[int, list[Request]] = field(default_factory=lambda: defaultdict(list))
    # event_id -> last bucket it touches, for the events of open buckets (duplicate detection)
    pending_ids: dict[str, int] = field(default_factory=dict)
    next_open_us: int | None = None  # every bucket before this one is closed
    last_event_us: int | None = None


class Book:
    """Open buckets of many resources; closes them in event-time order."""

    def __init__(self, settings: AccountingSettings) -> None:
        self.settings = settings
        self._resources: dict[str, _Resource] = defaultdict(_Resource)
        self.max_event_us: int | None = None

    # -- input ---------------------------------------------------------------------------
    def add_rate(self, rate: Rate) -> None:
        res = self._resources[rate.resource_id]
        if rate in res.rates:
            return
        res.rates.append(rate)
        start = bucket_floor(rate.start_us, self.settings.bucket_us)
        if res.next_open_us is None:
            res.next_open_us = start

    def add_request(self, req: Request) -> Added:
        res = self._resources[req.resource_id]
        buckets = request_buckets(req, self.settings.bucket_us)
        if req.event_id in res.pending_ids:
            return Added.DUPLICATE
        if res.next_open_us is not None and buckets.start < res.next_open_us:
            return Added.LATE
        if res.next_open_us is None:
            res.next_open_us = buckets.start
        for b in buckets:
            res.open[b].append(req)
        res.pending_ids[req.event_id] = buckets[-1]
        if res.last_event_us is None or req.end_us > res.last_event_us:
            res.last_event_us = req.end_us
        if self.max_event_us is None or req.end_us > self.max_event_us:
            self.max_event_us = req.end_us
        return Added.ACCEPTED

    # -- time ----------------------------------------------------------------------------
    def watermark_us(self) -> int | None:
        """Event time up to which every bucket may close: latest finish minus allowed lateness."""
        if self.max_event_us is None:
            return None
        return self.max_event_us - self.settings.lateness_us

    def next_open(self, resource_id: str) -> int | None:
        res = self._resources.get(resource_id)
        return None if res is None else res.next_open_us

    def advance(self, until_us: int | None = None) -> list[ClosedBucket]:
        """Close every bucket of every resource that ends at or before ``until_us``.

        ``until_us`` defaults to the watermark. Buckets without traffic close too when the
        resource has a rate for them (idle cost).
        """
        limit = self.watermark_us() if until_us is None else until_us
        if limit is None:
            return []
        end = bucket_floor(limit, self.settings.bucket_us)
        closed: list[ClosedBucket] = []
        for resource_id in sorted(self._resources):
            closed.extend(self._close(resource_id, end))
        return closed

    def flush(self) -> list[ClosedBucket]:
        """Close everything the bounded input determines (``run --until-idle``).

        Each resource closes up to the end of its latest finite rate (``effective_to``) or, for
        an open-ended rate, up to the latest event time in the whole input; a resource with
        traffic and no rate closes up to its own last event.
        """
        W = self.settings.bucket_us
        closed: list[ClosedBucket] = []
        for resource_id in sorted(self._resources):
            res = self._resources[resource_id]
            ends = []
            if res.last_event_us is not None:
                ends.append(bucket_floor(res.last_event_us, W) + W)
            for rate in res.rates:
                if rate.end_us is not None:
                    ends.append(bucket_ceil(rate.end_us, W))
                elif self.max_event_us is not None:
                    ends.append(bucket_floor(self.max_event_us, W) + W)
            if ends:
                closed.extend(self._close(resource_id, max(ends)))
        return closed

    def _close(self, resource_id: str, end_us: int) -> list[ClosedBucket]:
        res = self._resources[resource_id]
        if res.next_open_us is None or res.next_open_us >= end_us:
            return []
        W = self.settings.bucket_us
        closed: list[ClosedBucket] = []
        b = res.next_open_us
        while b < end_us:
            requests = res.open.pop(b, [])
            if requests or self._priced(res, b):
                entries = allocate_bucket(resource_id, b, requests, res.rates, self.settings)
                closed.append(ClosedBucket(resource_id, b, entries))
                b += W
                continue
            # nothing here: skip to the next bucket with traffic or a rate
            candidates = [k for k in res.open if k > b]
            nxt = self._next_priced(res, b, end_us)
            if nxt is not None:
                candidates.append(nxt)
            b = min(min(candidates, default=end_us), end_us)
        res.next_open_us = b
        for eid in [e for e, last in res.pending_ids.items() if last < b]:
            del res.pending_ids[eid]
        return closed

    def _priced(self, res: _Resource, b: int) -> bool:
        W = self.settings.bucket_us
        return any(r.start_us < b + W and (r.end_us is None or r.end_us > b) for r in res.rates)

    def _next_priced(self, res: _Resource, b: int, end_us: int) -> int | None:
        W = self.settings.bucket_us
        starts = [
            max(b + W, bucket_floor(r.start_us, W))
            for r in res.rates
            if r.end_us is None or r.end_us > b + W
        ]
        starts = [s for s in starts if s < end_us]
        return min(starts, default=None)
