"""Wire contracts: validation with clear messages, and generated schemas that do not drift."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.contracts import (
    DecodeError,
    GpuRate,
    InferenceEvent,
    decode_allocation,
    decode_events,
    decode_rate,
    dumps,
)
from services.contracts.schemas import SCHEMAS, render

EVENT = {
    "event_id": "e1",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "m",
    "engine": "vllm",
    "started_at": "2024-01-01T00:00:00+02:00",
    "finished_at": "2024-01-01T00:00:30+02:00",
    "prompt_tokens": 10,
    "cached_prompt_tokens": 2,
    "completion_tokens": 5,
    "status": "ok",
}
RATE = {
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
}


def test_timestamps_are_normalised_to_utc():
    event = InferenceEvent.model_validate(EVENT)
    offset = event.started_at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert event.started_at.hour == 22
    assert json.loads(dumps(event))["started_at"] == "2023-12-31T22:00:00Z"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"started_at": "2024-01-01T00:00:00"}, "naive"),
        ({"prompt_tokens": -1}, "greater than or equal to 0"),
        ({"cached_prompt_tokens": 11}, "cached_prompt_tokens (11) exceeds prompt_tokens (10)"),
        ({"finished_at": "2023-12-31T00:00:00Z"}, "finished_at is before started_at"),
        ({"status": "done"}, "'ok', 'error' or 'cancelled'"),
        ({"gpu_count": 0}, "greater than or equal to 1"),
        ({"event_id": ""}, "at least 1 character"),
        ({"prompt_token": 3}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_events_are_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValidationError, match=None) as err:
        InferenceEvent.model_validate({**EVENT, **change})
    assert message in str(err.value)


@pytest.mark.parametrize("price", [36.0, 36, True])
def test_money_as_a_json_number_is_rejected(price):
    with pytest.raises(ValidationError) as err:
        GpuRate.model_validate({**RATE, "price_per_hour": price})
    assert "decimal string" in str(err.value)


def test_money_round_trips_as_a_string():
    rate = GpuRate.model_validate(RATE)
    assert rate.price_per_hour == Decimal("36.00")
    assert json.loads(dumps(rate))["price_per_hour"] == "36.00"
    assert decode_rate(dumps(rate)) == rate


def test_decode_reasons():
    cases = {
        b"\xff": "invalid_utf8",
        b"{x": "invalid_json",
        b"[]": "invalid_message",
        b'{"type": "inferledger.nope.v1"}': "unknown_type",
        json.dumps({**EVENT, "prompt_tokens": -1}).encode(): "invalid_event",
        b'{"resource_id": 5, "events": "x"}': "invalid_batch",
    }
    for raw, reason in cases.items():
        with pytest.raises(DecodeError) as err:
            decode_events(raw)
        assert err.value.reason == reason, raw
    with pytest.raises(DecodeError) as err:
        decode_allocation(b'{"type": "inferledger.inference_event.v1"}')
    assert err.value.reason == "unknown_type"


def test_a_batch_keeps_its_valid_events_and_rejects_the_others():
    batch = {
        "resource_id": "node-1",
        "events": [
            EVENT,
            {**EVENT, "event_id": "e2", "completion_tokens": -3},
            {**EVENT, "event_id": "e3", "resource_id": "other"},
        ],
    }
    decoded = decode_events(json.dumps(batch).encode())
    assert [e.event_id for e in decoded.events] == ["e1"]
    assert [r.reason for r in decoded.rejected] == ["invalid_event", "invalid_event"]


def test_generated_schemas_do_not_drift():
    rendered = render()
    on_disk = {p.name: p.read_text() for p in SCHEMAS.glob("*.json")}
    assert on_disk == rendered, "schemas/ is stale: run `python -m services.contracts.schemas`"


def test_ledger_entry_limits_are_the_ledger_columns():
    """The contract refuses what the ledger_entries columns cannot hold; the two must agree."""
    from sqlalchemy import BigInteger, Integer, Numeric

    from services.contracts.models import (
        AMOUNT_LIMIT,
        BUSY_LIMIT,
        INT4_MAX,
        INT8_MAX,
        WORK_LIMIT,
        LedgerEntry,
    )
    from services.ledger.schema import ledger_entries

    columns = ledger_entries.c
    for name, limit in (
        ("amount", AMOUNT_LIMIT),
        ("work_units", WORK_LIMIT),
        ("busy_seconds", BUSY_LIMIT),
    ):
        kind = columns[name].type
        assert isinstance(kind, Numeric)
        assert kind.precision is not None and kind.scale is not None
        assert Decimal(10) ** (kind.precision - kind.scale) == limit, name
    for name, int_type, most in (
        ("completions", Integer, INT4_MAX),
        ("failed_requests", Integer, INT4_MAX),
        ("prompt_tokens", BigInteger, INT8_MAX),
        ("cached_prompt_tokens", BigInteger, INT8_MAX),
        ("completion_tokens", BigInteger, INT8_MAX),
    ):
        assert type(columns[name].type) is int_type, name
        field = LedgerEntry.model_fields[name]
        assert any(getattr(m, "le", None) == most for m in field.metadata), name
