"""The events watermark: event time up to which buckets may close, over a worker's partitions.

Per events partition it keeps the latest finish seen and when (monotonic time) the partition
last delivered, so that the slowest partition holds the watermark, an idle one stops holding
it, and one running far ahead can be paused. Pure bookkeeping: no Kafka, no Book.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet


class Watermark:
    """The watermark of one worker's events partitions.

    ``lateness_us``: allowed lateness subtracted from the slowest partition's latest finish;
    ``idle_seconds``: a partition silent for this long no longer holds the others back;
    ``lead_seconds``: a partition further ahead of the slowest than this is to be paused (0:
    never); ``no_traffic``: the watermark when no assigned partition ever delivered (how far
    other workers have closed), None if unknown.
    """

    def __init__(
        self,
        lateness_us: int,
        idle_seconds: float,
        lead_seconds: float,
        no_traffic: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lateness_us = lateness_us
        self.idle_seconds = idle_seconds
        self.lead_us = lead_seconds * 1_000_000
        self.no_traffic = no_traffic
        self.clock = clock
        # latest finish seen per partition: the watermark is the slowest partition's
        # (a partition consumed ahead of the others must not make their events late)
        self._latest: dict[int, int] = {}
        self._seen: dict[int, float] = {}  # monotonic time of its latest event
        self._paused: set[int] = set()  # partitions paused because they ran ahead
        self._assigned_at: dict[int, float] = {}  # monotonic time a partition was first seen

    def latest(self, partition: int) -> int | None:
        """The latest finish seen on ``partition`` (µs), None before its first event."""
        return self._latest.get(partition)

    def per_partition(self) -> dict[int, int]:
        """Per partition with events, its latest finish minus allowed lateness (µs): the event
        time up to which that partition alone would let buckets close (for /metrics)."""
        return {p: t - self.lateness_us for p, t in list(self._latest.items())}

    def saw(self, partition: int, latest_us: int) -> None:
        """``partition`` delivered events (accepted or not) finishing up to ``latest_us``."""
        self._latest[partition] = max(latest_us, self._latest.get(partition, latest_us))
        self._seen[partition] = self.clock()

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions this worker no longer has (a rebalance gave them to another)."""
        for p in partitions:
            self._latest.pop(p, None)
            self._seen.pop(p, None)
            self._assigned_at.pop(p, None)
            self._paused.discard(p)

    def _active(self, partitions: set[int], drained: AbstractSet[int]) -> list[int]:
        """The partitions that hold the watermark: with data, not drained, not idle."""
        idle_after = self.clock() - self.idle_seconds
        return [
            p
            for p in partitions
            if p in self._latest
            and p not in drained  # drained: no more data coming
            # idle: does not hold the others back (a paused partition is not idle)
            and (self._seen[p] >= idle_after or p in self._paused)
        ]

    def ahead(self, partitions: set[int], drained: AbstractSet[int] = frozenset()) -> set[int]:
        """Partitions to pause: more than ``lead_seconds`` of event time ahead of the slowest
        one. Their messages could not be released before the slowest catches up, so reading on
        would only hold them in memory (the slowest one is never paused)."""
        active = self._active(partitions, drained)
        paused: set[int] = set()
        if self.lead_us and len(active) > 1:
            limit = min(self._latest[p] for p in active) + self.lead_us
            paused = {p for p in active if self._latest[p] > limit}
        now = self.clock()
        for p in self._paused - paused:  # resumed: a fresh wait before it counts as idle
            self._seen[p] = now
        self._paused = paused
        return paused

    def of(self, partitions: set[int], drained: AbstractSet[int] = frozenset()) -> int | None:
        """Event time up to which buckets may close: the slowest assigned partition's latest
        finish minus allowed lateness. A partition that has delivered nothing yet holds it
        (after a restart it may hold the oldest events) until it has been silent for
        ``idle_seconds`` since it was assigned, or it is ``drained`` (its end marker came)."""
        now = self.clock()
        for p in partitions:
            self._assigned_at.setdefault(p, now)
        idle_after = now - self.idle_seconds
        if any(
            p not in self._latest and p not in drained and self._assigned_at[p] > idle_after
            for p in partitions
        ):
            return None
        active = self._active(partitions, drained)
        if not active:
            active = [p for p in partitions if p in self._latest]
            if not active:  # no traffic here at all: as far as the other workers closed
                return self.no_traffic()
            return max(self._latest[p] for p in active) - self.lateness_us
        return min(self._latest[p] for p in active) - self.lateness_us
