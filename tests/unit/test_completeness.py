"""The audit's completeness scan of the input topic and its dead letters (records in, no I/O),
and the retry-with-backoff that keeps processors up through an outage."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import exc as sa_exc

from services.ledger.completeness import events_accounted, scan_events
from services.runtime import health
from services.runtime.kafka import dead_letter
from tests.helpers import SAMPLE_EVENT

EVENT = SAMPLE_EVENT


def rec(value: bytes | None, offset: int = 0):
    return ("t", 0, offset, b"node-1", value)


def test_scan_finds_valid_events_and_dead_lettered_ids():
    batch = {
        "resource_id": "node-1",
        "events": [dict(EVENT, event_id="b1"), dict(EVENT, event_id="b2", prompt_tokens=-1)],
    }
    dead = dead_letter(
        "inference-events",
        "future_event",
        "too far ahead",
        dict(EVENT, event_id="e9"),
        65536,
        source="attribution",
    )
    partial = {"type": "inferledger.dead_letter.v1", "reason": "x", "payload": "{}"}
    scan = scan_events(
        [
            rec(json.dumps(EVENT).encode()),
            rec(json.dumps(batch).encode()),
            rec(None),
            rec(b"{broken"),
            rec(b"\xff\xfe"),
        ],
        [rec(dead), rec(b"not a dead letter"), rec(json.dumps(partial).encode())],
    )
    assert scan.valid == {"e1", "b1"}
    assert scan.messages == 5 and scan.tombstones == 1
    assert scan.unreadable == 3  # b2, the broken JSON and the invalid UTF-8
    assert scan.dead_lettered == {"e9": "future_event"}
    assert scan.dlq_reasons == {"future_event": 1, "unreadable_dead_letter": 2}


def test_retry_waits_out_an_outage_and_reports_it(monkeypatch):
    monkeypatch.setattr("services.runtime.health.time.sleep", lambda s: None)
    state = health.Health()
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
        assert not state.healthy and state.status()["failing"]["postgres"]["attempts"] == 2
        return "done"

    assert health.retry_sync("postgres", flaky, health.postgres_errors(), state) == "done"
    assert state.healthy and state.status() == {"status": "ok", "failing": {}}


def test_retry_lets_a_bug_through():
    with pytest.raises(ZeroDivisionError):
        health.retry_sync("postgres", lambda: 1 // 0, health.postgres_errors(), health.Health())


class _Counted:
    """A connection whose counted_events holds these event ids (events_accounted's query)."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    def execute(self, _query):
        ids = self.ids

        class Result:
            def scalars(self):
                return iter(ids)

        return Result()


def test_counted_events_missing_from_a_topic_that_retention_never_touched_fail_the_audit():
    marker = b'{"type": "inferledger.control.end_of_input.v1", "run_id": "r"}'
    # a recreated topic (another broker): only markers, every partition from offset 0
    fresh = scan_events([("t", p, 0, None, marker) for p in range(4)], [])
    fresh.partitions = 4
    assert fresh.retained_from_start()
    check = events_accounted(_Counted({"e1", "e2"}), fresh)  # type: ignore[arg-type]
    assert not check.ok and "retention deleted nothing" in check.problems[0]
    # the same, but retention has begun on a partition: the old events may have aged out
    aged = scan_events([("t", p, 7 if p == 2 else 0, None, marker) for p in range(4)], [])
    aged.partitions = 4
    assert not aged.retained_from_start()
    check = events_accounted(_Counted({"e1", "e2"}), aged)  # type: ignore[arg-type]
    assert check.ok and "no longer on the topic (retention)" in check.detail
    # a partition with no record at all: nothing proves retention deleted nothing there
    partial = scan_events([("t", 0, 0, None, marker)], [])
    partial.partitions = 4
    assert not partial.retained_from_start()
