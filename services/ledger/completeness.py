"""Completeness: the audit's proof that nothing accepted was lost.

The consistency checks in :mod:`services.ledger.audit` prove that what the ledger holds adds
up. They cannot see what it does not hold: an event that never reached a bucket, a bucket that
never closed. These checks compare the ledger with its inputs:

- every valid event on the retained ``inference-events`` topic is counted (``counted_events``)
  or sits in ``inference-events.dlq`` with its reason;
- every bucket a rate covers has entries (to its end; an open-ended rate's to the latest
  bucket with traffic), up to the latest closed bucket;
- no allocation waits in the attribution outbox for longer than a few minutes.

Reading the events topic is linear in its retained size (see docs/operations.md).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from services.contracts import DecodeError, decode_dead_letter, decode_events
from services.runtime.config import EVENTS, Settings
from services.runtime.kafka import Record


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    problems: list[str] = field(default_factory=list)


@dataclass
class TopicEvents:
    """What the events topic and its dead-letter topic hold, as event ids."""

    valid: set[str] = field(default_factory=set)  # decodable events on the topic
    dead_lettered: dict[str, str] = field(default_factory=dict)  # event id -> reason
    messages: int = 0
    tombstones: int = 0
    unreadable: int = 0  # messages or batch items the decoder rejects (their DLQ is counted)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    first_offsets: dict[int, int] = field(default_factory=dict)  # partition -> first retained
    partitions: int | None = None  # how many the topic has (None: not known)

    def retained_from_start(self) -> bool:
        """Every partition holds records from offset 0: retention has deleted nothing."""
        return (
            self.partitions is not None
            and len(self.first_offsets) == self.partitions
            and all(o == 0 for o in self.first_offsets.values())
        )


def scan_events(records: Iterable[Record], dlq_records: Iterable[Record]) -> TopicEvents:
    """The event ids on the events topic and in its dead letters (no I/O: records in)."""
    out = TopicEvents()
    for _, partition, offset, _, value in records:
        out.messages += 1
        out.first_offsets.setdefault(partition, offset)
        if value is None:
            out.tombstones += 1
            continue
        try:
            decoded = decode_events(value)
        except DecodeError:
            out.unreadable += 1
            continue
        out.unreadable += len(decoded.rejected)
        out.valid.update(e.event_id for e in decoded.events)
    for _, _, _, _, value in dlq_records:
        try:
            letter = decode_dead_letter(value)
        except DecodeError:
            out.dlq_reasons["unreadable_dead_letter"] += 1
            continue
        out.dlq_reasons[letter.reason] += 1
        for event_id in _event_ids(_json(letter.payload)):
            out.dead_lettered.setdefault(event_id, letter.reason)
    return out


def scan_input(settings: Settings) -> TopicEvents:
    """:func:`scan_events` of the configured events topic and its dead letters, read now."""
    from services.runtime.kafka import make_producer, read_records

    name = settings.topic(EVENTS)
    out = scan_events(
        read_records(settings, [name], client_id="inferledger-audit"),
        read_records(settings, [f"{name}.dlq"], client_id="inferledger-audit"),
    )
    producer = make_producer(settings)
    try:
        out.partitions = len(producer.partitions_for(name) or ())
    finally:
        producer.close(10)
    return out


def _json(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, TypeError, RecursionError):
        return None


def _event_ids(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return []
    if isinstance(payload.get("events"), list):
        return [
            e["event_id"]
            for e in payload["events"]
            if isinstance(e, dict) and isinstance(e.get("event_id"), str)
        ]
    event_id = payload.get("event_id")
    return [event_id] if isinstance(event_id, str) else []


def events_accounted(conn: Connection, topic: TopicEvents) -> Check:
    """Every valid event on the topic is counted, or dead-lettered with its reason."""
    counted = set(conn.execute(text("SELECT DISTINCT event_id FROM counted_events")).scalars())
    missing = sorted(topic.valid - counted - topic.dead_lettered.keys())
    dead = len(topic.valid & topic.dead_lettered.keys() - counted)
    off_topic = len(counted - topic.valid)
    detail = (
        f"{len(topic.valid)} valid events on the topic in {topic.messages} messages: "
        f"{len(topic.valid & counted)} counted, {dead} dead-lettered, {len(missing)} missing; "
        f"{topic.tombstones} tombstones, {topic.unreadable} rejected at decoding; "
        f"dead letters by reason {dict(sorted(topic.dlq_reasons.items()))}"
    )
    problems = [f"event {e} is neither counted nor dead-lettered" for e in missing[:50]]
    if off_topic and topic.retained_from_start():
        problems.append(
            f"{off_topic} counted events are not on the events topic, although every partition "
            "still starts at offset 0 (retention deleted nothing): the topic was recreated or "
            "belongs to another broker, and completeness cannot be proven"
        )
    elif off_topic:
        detail += f"; {off_topic} counted events no longer on the topic (retention)"
    if topic.messages == 0 and counted:
        problems.append(
            "the events topic is empty or gone while the ledger counts events: completeness "
            "cannot be proven (a broker that kept nothing? `--skip-topics` checks consistency)"
        )
    return Check(
        "every valid event on the input topic is counted or dead-lettered",
        not problems,
        detail,
        problems,
    )


EXPECTED_BUCKETS = """
WITH last AS (
    SELECT max(bucket_start) FILTER (WHERE tenant_id IS NOT NULL) AS traffic,
           coalesce(
               (SELECT max(closed_through) FROM attribution_progress),
               max(bucket_start) + make_interval(secs => :w)
           ) - make_interval(secs => :w) AS closed
    FROM ledger_entries
), expected AS (
    -- a finite rate: every bucket to its end; an open-ended one: to the latest bucket with
    -- traffic (as a bounded run closes them); neither past what the attribution processor
    -- says it has closed (a streaming run has not closed what lies after its watermark)
    SELECT DISTINCT r.resource_id, g.b AS bucket_start
    FROM gpu_rates r CROSS JOIN last
    CROSS JOIN LATERAL generate_series(
        to_timestamp(floor(extract(epoch FROM r.effective_from) / :w) * :w),
        least(
            coalesce(r.effective_to, last.traffic + make_interval(secs => :w)),
            last.closed + make_interval(secs => :w)
        ) - interval '1 microsecond',
        make_interval(secs => :w)
    ) AS g(b)
    WHERE last.closed IS NOT NULL
), missing AS (
    SELECT x.resource_id, x.bucket_start FROM expected x
    WHERE NOT EXISTS (
        SELECT 1 FROM ledger_entries l
        WHERE l.resource_id = x.resource_id AND l.bucket_start = x.bucket_start
    )
)
"""


def buckets_closed(conn: Connection, bucket_seconds: int) -> Check:
    """Every bucket a rate covers has entries (a rated resource costs money whether it served
    or sat idle): a finite rate's to its end, an open-ended rate's to the latest bucket with
    traffic, neither past the latest closed bucket."""
    params = {"w": bucket_seconds}
    expected, missing = conn.execute(
        text(EXPECTED_BUCKETS + "SELECT (SELECT count(*) FROM expected), count(*) FROM missing"),
        params,
    ).one()
    rows = conn.execute(
        text(EXPECTED_BUCKETS + "SELECT * FROM missing ORDER BY 1, 2 LIMIT 50"), params
    ).all()
    return Check(
        "every rated bucket has entries",
        not missing,
        f"{expected} rated buckets, {missing} without entries",
        [f"{r.resource_id} bucket {r.bucket_start.isoformat()} has no entries" for r in rows],
    )


def outbox_drained(conn: Connection, max_age_seconds: int = 300) -> Check:
    """Allocations stored but not known to be in Kafka: normal for a moment while the
    attribution processor runs; older ones mean it stopped before publishing them (its next
    start republishes them)."""
    n, old = conn.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE created_at < now() - make_interval("
            "secs => :age)) FROM attribution_outbox"
        ),
        {"age": max_age_seconds},
    ).one()
    return Check(
        "no allocation waits in the attribution outbox",
        not old,
        f"{n} allocations in the outbox, {old} older than {max_age_seconds} s",
        [f"{old} allocations were stored and never published: start the attribution processor"]
        if old
        else [],
    )
