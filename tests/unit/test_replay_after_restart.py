"""Two root causes of lost events, on the pure core and on faust's offset logic (no I/O)."""

from __future__ import annotations

from tests.helpers import FAULT_EPOCH


def test_event_replayed_after_restart_is_completed_not_dropped_as_duplicate():
    """The root cause above, on the pure core (no broker): an event spanning a closed bucket and
    an open one is replayed after a restart (its message was held, so Kafka delivers it again).
    The restored Book finds its id in the closed bucket and calls the whole event a duplicate,
    so its open buckets, where it finishes, never get its work, busy time or counts."""
    from datetime import datetime, timedelta

    from services.accounting import AccountingSettings, Book
    from services.attribution.encode import to_request
    from services.contracts import InferenceEvent

    t0 = datetime.fromisoformat(FAULT_EPOCH)

    def event(eid: str, start_s: int, seconds: int) -> InferenceEvent:
        return InferenceEvent(
            event_id=eid,
            tenant_id="t",
            resource_id="n",
            model="m",
            engine="vllm",
            started_at=t0 + timedelta(seconds=start_s),
            finished_at=t0 + timedelta(seconds=start_s + seconds),
            prompt_tokens=10,
            completion_tokens=5,
            status="ok",
        )

    long = event("long", 30, 200)  # buckets 0..3 (60 s), finishes in bucket 3
    before = Book(AccountingSettings())
    before.add_request(to_request(long))
    before.add_request(to_request(event("later", 300, 1)))  # watermark 181 s: 0, 1, 2 close
    assert len(before.advance()) == 3
    stored = before.take_dirty()  # what the attribution processor saves in Postgres

    after = Book(AccountingSettings())  # the restarted processor
    for item in stored:
        after.restore(*item)
    after.add_request(to_request(long))  # its held message, delivered again
    counted = [c for closed in after.flush() for c in closed.counted]
    assert ("long", "ok") in counted, "the replayed event was dropped as a duplicate"


def test_consumer_never_commits_past_a_held_message():
    """The attribution processor holds a message (``msg.incref()``) until its buckets close and
    lets later ones go first: Kafka's committed offset must never pass a held message, or a
    crash loses it. faust-streaming 0.15's ``Consumer._new_offset`` (transport/consumer.py)
    commits the first run of acknowledged offsets when nothing was committed yet or the
    committed offset is 0 (``if committed_offset:``), and when exactly one message at the
    committed offset is still held (``min(acked) - committed_offset > 1``: off by one)."""
    from collections import defaultdict
    from types import SimpleNamespace

    from intervaltree import IntervalTree

    from services.runtime.faustapp import _Consumer

    def new_offset(committed: int | None, acked: list[int]) -> int | None:
        tp = ("inference-events", 0)
        state = SimpleNamespace(
            _acked=defaultdict(list, {tp: list(acked)}),
            _gap=defaultdict(IntervalTree),
            _committed_offset=defaultdict(lambda: None, {tp: committed}),
            _acked_index=defaultdict(set, {tp: set(acked)}),
        )
        return _Consumer._new_offset(state, tp)  # type: ignore[arg-type]

    # (committed, acked) -> the commit must not pass the first held offset
    cases = {
        "nothing committed, offset 0 held": (None, [1, 2], 0),
        "committed 0, offset 0 held": (0, [1, 2], 0),
        "committed 5, offset 5 held": (5, [6, 7], 5),
        "committed 5, offsets 5, 6 held": (5, [7], 5),
    }
    bad = {}
    for name, (committed, acked, held) in cases.items():
        got = new_offset(committed, acked)
        if got is not None and got > held:
            bad[name] = f"commits {got}, past held offset {held}"
    assert not bad, bad
