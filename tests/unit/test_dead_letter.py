"""The dead-letter contract: what every component writes, what ``dlq`` reads back, and records
written before the contract existed still decode."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.contracts import DeadLetter, DecodeError, decode_dead_letter, encode_dead_letter
from services.ingest.dlq import letter, record_of
from services.runtime.kafka import dead_letter

# byte for byte what services.runtime.kafka.dead_letter wrote before the DeadLetter model
# (json.dumps of a dict: spaces after separators, ASCII escapes, +00:00, null partition)
OLD_INGEST = (
    b'{"type": "inferledger.dead_letter.v1", "reason": "invalid_event", "detail": "line 3: '
    b'prompt_tokens: Input should be greater than or equal to 0", "source": "ingest", "topic": '
    b'"inference-events", "partition": null, "offset": null, "payload": "{\\"event_id\\": '
    b'\\"e3\\", \\"model\\": \\"caf\\u00e9\\"}", "payload_truncated": false, "payload_size": 35, '
    b'"rejected_at": "2026-11-28T10:15:42.123456+00:00"}'
)
OLD_GATEWAY = (
    b'{"type": "inferledger.dead_letter.v1", "reason": "forbidden", "detail": "token may not '
    b'write node-1", "source": "gateway", "topic": "inference-events", "partition": null, '
    b'"offset": null, "payload": "{\\"event_id\\": \\"e4\\"}", "payload_truncated": false, '
    b'"payload_size": 19, "rejected_at": "2026-11-28T10:15:43.000001+00:00", "credential": '
    b'null, "credential_id": "c-1234"}'
)
OLD_PROCESSOR = (
    b'{"type": "inferledger.dead_letter.v1", "reason": "invalid_json", "detail": "EOF", '
    b'"source": "attribution", "topic": "inference-events", "partition": 2, "offset": 17, '
    b'"payload": "{\\"event_id\\": \\"broken\\", ", "payload_truncated": false, '
    b'"payload_size": 24, "rejected_at": "2026-11-28T10:15:41+00:00"}'
)


def test_dead_letters_written_before_the_contract_still_decode():
    ingest = decode_dead_letter(OLD_INGEST)
    assert ingest.reason == "invalid_event" and ingest.source == "ingest"
    assert ingest.partition is None and ingest.offset is None
    assert json.loads(ingest.payload) == {"event_id": "e3", "model": "café"}
    assert ingest.rejected_at == datetime(2026, 11, 28, 10, 15, 42, 123456, tzinfo=UTC)
    gateway = decode_dead_letter(OLD_GATEWAY)
    assert gateway.credential is None and gateway.credential_id == "c-1234"
    processor = decode_dead_letter(OLD_PROCESSOR)
    assert (processor.partition, processor.offset) == (2, 17)
    # and what dlq list shows of them is the record as it was written (timestamps in UTC)
    for raw in (OLD_INGEST, OLD_GATEWAY, OLD_PROCESSOR):
        old = json.loads(raw)
        shown = letter("inference-events.dlq", 0, 5, raw).record
        assert shown.keys() == old.keys()
        assert {k: v for k, v in shown.items() if k != "rejected_at"} == {
            k: v for k, v in old.items() if k != "rejected_at"
        }


def test_what_components_write_has_the_old_fields_and_round_trips():
    raw = dead_letter("inference-events", "invalid_json", "EOF", b"{\xff", 65536, source="ingest")
    assert list(json.loads(raw)) == list(json.loads(OLD_INGEST))  # same fields, same order
    decoded = decode_dead_letter(raw)
    assert decoded.payload == "{\\xff" and decoded.payload_size == 5
    assert encode_dead_letter(decoded) == raw
    gateway = dead_letter("t", "forbidden", "no", "{}", 10, source="gateway",
                          credential="a", credential_id="c-1")  # fmt: skip
    assert list(json.loads(gateway)) == list(json.loads(OLD_GATEWAY))
    truncated = decode_dead_letter(dead_letter("t", "r", "d", "x" * 50, 10, source="s"))
    assert truncated.payload == "x" * 10 and truncated.payload_truncated
    assert truncated.payload_size == 50


def test_the_payload_is_kept_exactly_and_a_lone_surrogate_is_escaped():
    raw = dead_letter("t", "r", " detail ", "  {}\n\ud800", 100, source="s")
    decoded = decode_dead_letter(raw)
    assert decoded.payload == "  {}\n\\ud800" and decoded.detail == " detail "


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"not json",
        b"[]",
        b'{"type": "inferledger.dead_letter.v1", "reason": "x", "payload": "{}"}',
        OLD_INGEST.replace(b'"source"', b'"sauce"'),
        OLD_INGEST.replace(b"+00:00", b""),  # naive
    ],
)
def test_what_is_not_a_dead_letter_is_refused_and_listed_as_unreadable(raw):
    with pytest.raises(DecodeError):
        decode_dead_letter(raw)
    listed = letter("x.dlq", 1, 2, raw)
    assert listed.reason == "unreadable_dead_letter" and listed.rejected_at is None
    assert listed.topic == "x"


def test_listing_order_is_by_rejection_time_then_position():
    letters = [
        letter("b.dlq", 0, 0, OLD_GATEWAY),  # 10:15:43
        letter("a.dlq", 1, 9, b"junk"),  # unreadable: last
        letter("a.dlq", 0, 3, OLD_INGEST),  # 10:15:42
        letter("b.dlq", 0, 1, OLD_PROCESSOR),  # 10:15:41
        letter("a.dlq", 0, 1, OLD_PROCESSOR),  # same instant: by topic
    ]
    ordered = sorted(letters, key=lambda d: d.order())
    assert [(d.dlq_topic, d.dlq_offset) for d in ordered] == [
        ("a.dlq", 1),
        ("b.dlq", 1),
        ("a.dlq", 3),
        ("b.dlq", 0),
        ("a.dlq", 9),
    ]


def test_record_of_is_the_wire_object():
    d = DeadLetter.model_validate_json(OLD_PROCESSOR)
    assert record_of(d) == json.loads(encode_dead_letter(d))
