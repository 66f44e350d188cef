"""What a bucket knows about its traffic: mergeable, exact, independent of arrival order.

Work is counted in integer nano work units (1e-9) and a request's share of a bucket is rounded
to a whole nano unit (half to even) before it is summed, so every sum is exact, the facts of a
bucket do not depend on the order in which requests arrive, and the per-event path does only
integer arithmetic (Decimal appears when a bucket closes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.accounting.model import Request

NANO = 10**9
GroupKey = tuple[str, str]


def to_nanos(work: Decimal) -> int:
    """Work units as integer nano units (exact: ``work`` must be a multiple of 1e-9)."""
    scaled = work.scaleb(9)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"work {work} is not a multiple of 1e-9")
    return int(scaled)


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def share(nanos: int, part: int, whole: int) -> int:
    """``nanos * part / whole`` rounded to a whole nano unit, half to even."""
    q, r = divmod(nanos * part, whole)
    twice = 2 * r
    if twice > whole or (twice == whole and q & 1):
        q += 1
    return q


def merge_interval(intervals: list[tuple[int, int]], lo: int, hi: int) -> None:
    """Insert ``[lo, hi)`` into a sorted list of disjoint intervals, merging overlaps."""
    if not intervals or lo > intervals[-1][1]:  # the common case: after everything so far
        intervals.append((lo, hi))
        return
    last_lo, last_hi = intervals[-1]
    if lo >= last_lo:  # overlaps or touches only the last interval
        if hi > last_hi:
            intervals[-1] = (last_lo, hi)
        return
    out: list[tuple[int, int]] = []
    placed = False
    for a, b in intervals:
        if b < lo:
            out.append((a, b))
        elif hi < a:
            if not placed:
                out.append((lo, hi))
                placed = True
            out.append((a, b))
        else:
            lo, hi = min(lo, a), max(hi, b)
    if not placed:
        out.append((lo, hi))
    intervals[:] = out


def length(intervals: list[tuple[int, int]]) -> int:
    return sum(b - a for a, b in intervals)


@dataclass
class GroupFacts:
    work: int = 0  # nano work units
    intervals: list[tuple[int, int]] = field(default_factory=list)
    completions: int = 0
    failed: int = 0
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    within: int = 0  # completions within their objective (counted where they finish)
    cancelled: int = 0  # cancelled requests (also counted in failed)
    class_work: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """Nano work units per request class (``services.accounting.slo``): sums to ``work``."""
    class_time: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """Microseconds of requests inside the bucket per class (summed, not merged): the class
    weights of a group whose requests carry no token work at all."""

    def copy(self) -> GroupFacts:
        return GroupFacts(
            self.work,
            list(self.intervals),
            self.completions,
            self.failed,
            self.prompt,
            self.cached,
            self.completion,
            self.within,
            self.cancelled,
            list(self.class_work),
            list(self.class_time),
        )


@dataclass
class BucketFacts:
    """Traffic of one resource in one bucket."""

    start_us: int
    groups: dict[GroupKey, GroupFacts] = field(default_factory=dict)
    busy: list[tuple[int, int]] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)
    finished: dict[str, str] = field(default_factory=dict)  # event_id -> status, counted here

    def copy(self) -> BucketFacts:
        return BucketFacts(
            self.start_us,
            {k: g.copy() for k, g in self.groups.items()},
            list(self.busy),
            set(self.event_ids),
            dict(self.finished),
        )

    def add(self, req: Request, work_nanos: int, bucket_us: int, cls: int = 0) -> bool:
        """Add a request's share of this bucket; False (and no change) for a known event_id.
        ``cls`` is the request's class (``services.accounting.slo``; 0: within objective)."""
        event_ids = self.event_ids
        if req.event_id in event_ids:
            return False
        event_ids.add(req.event_id)
        b0 = self.start_us
        b1 = b0 + bucket_us
        start, end = req.start_us, req.end_us
        lo = start if start > b0 else b0
        hi = end if end < b1 else b1
        duration = end - start
        if duration == 0:
            work = work_nanos if b0 <= start < b1 else 0
        elif hi - lo == duration:  # wholly inside this bucket
            work = work_nanos
        elif hi > lo:
            work = share(work_nanos, hi - lo, duration)
        else:
            work = 0
        key = (req.tenant_id, req.model)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = GroupFacts()
        g.work += work
        g.class_work[cls] += work
        if hi > lo:
            g.class_time[cls] += hi - lo
            # merge_interval's common case inline (per event): after everything so far
            iv = g.intervals
            if iv and lo <= iv[-1][1]:
                merge_interval(iv, lo, hi)
            else:
                iv.append((lo, hi))
            iv = self.busy
            if iv and lo <= iv[-1][1]:
                merge_interval(iv, lo, hi)
            else:
                iv.append((lo, hi))
        if b0 <= req.end_us < b1:
            self.finished[req.event_id] = req.status
            if req.status == "ok":
                g.completions += 1
                if cls == 0:
                    g.within += 1
            else:
                g.failed += 1
                if req.status == "cancelled":
                    g.cancelled += 1
            g.prompt += req.prompt_tokens
            g.cached += req.cached_prompt_tokens
            g.completion += req.completion_tokens
        return True

    # -- persistence (plain JSON-able data; the caller chooses the storage) -------------
    def to_data(self) -> dict[str, Any]:
        """The facts as plain data, format 2 (``busy2`` and ``groups2``): times inside the
        bucket as :func:`pack_intervals` gives them, work as integer nano units (an int, or its
        decimal text beyond 64 bits), and a group's work and time per request class as None and
        one number when all of it is in the first class. :meth:`from_data` still reads the
        first format (``busy`` and ``groups``: state stored before). The keys differ so that
        an older version of this code fails loudly on format 2 instead of misreading it."""
        b0 = self.start_us
        return {
            "start": b0,
            "busy2": pack_intervals(self.busy, b0),
            "events": sorted(self.event_ids),
            "finished": sorted(self.finished.items()),
            "groups2": [
                [
                    t,
                    m,
                    _int_data(g.work),
                    pack_intervals(g.intervals, b0),
                    g.completions,
                    g.failed,
                    g.prompt,
                    g.cached,
                    g.completion,
                    g.within,
                    g.cancelled,
                    # per class: None for the common case, all of it within objective
                    None if not any(g.class_work[1:]) else [_int_data(w) for w in g.class_work],
                    g.class_time[0] if not any(g.class_time[1:]) else g.class_time,
                ]
                for (t, m), g in sorted(self.groups.items())
            ],
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> BucketFacts:
        b0 = int(data["start"])
        if "groups2" in data:
            groups = {
                (t, m): GroupFacts(
                    int(w),
                    unpack_intervals(iv, b0),
                    c,
                    f,
                    p,
                    ca,
                    co,
                    wi,
                    cn,
                    [int(w), 0, 0, 0] if cw is None else [int(x) for x in cw],
                    [int(ct), 0, 0, 0] if isinstance(ct, int) else [int(x) for x in ct],
                )
                for t, m, w, iv, c, f, p, ca, co, wi, cn, cw, ct in data["groups2"]
            }
            busy = unpack_intervals(data["busy2"], b0)
        else:  # the first format: absolute [start, end] pairs, work as decimal text
            groups = {}
            for t, m, w, iv, c, f, p, ca, co, *more in data["groups"]:
                g = GroupFacts(to_nanos(Decimal(w)), [(a, b) for a, b in iv], c, f, p, ca, co)
                if more:
                    g.within, g.cancelled = more[0], more[1]
                    g.class_work = [to_nanos(Decimal(x)) for x in more[2]]
                    g.class_time = [int(x) for x in more[3]]
                else:  # stored before classes existed: all within objective, as it was counted
                    g.within = c
                    g.class_work = [g.work, 0, 0, 0]
                    g.class_time = [length(g.intervals), 0, 0, 0]
                groups[(t, m)] = g
            busy = [(a, b) for a, b in data["busy"]]
        return cls(
            b0,
            groups,
            busy,
            set(data["events"]),
            {e: s for e, s in data.get("finished", [])},
        )


_INT64 = 2**63


def _int_data(n: int) -> int | str:
    """An integer as JSON data: a number within 64 bits, else its decimal text (``int()``
    reads both back)."""
    return n if -_INT64 < n < _INT64 else str(n)


def pack_intervals(intervals: list[tuple[int, int]], origin: int) -> list[int]:
    """Sorted disjoint intervals as one flat list of differences: the first start from
    ``origin`` (the bucket's start), then each length and each gap to the next start. The
    numbers stay below the bucket's length instead of full Unix microseconds."""
    out: list[int] = []
    at = origin
    for a, b in intervals:
        out.append(a - at)
        out.append(b - a)
        at = b
    return out


def unpack_intervals(packed: list[int], origin: int) -> list[tuple[int, int]]:
    """The intervals :func:`pack_intervals` packed."""
    out: list[tuple[int, int]] = []
    at = origin
    for i in range(0, len(packed), 2):
        a = at + int(packed[i])
        at = a + int(packed[i + 1])
        out.append((a, at))
    return out
