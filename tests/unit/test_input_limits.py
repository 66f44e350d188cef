"""DESIGN.md section 2's input limits, enforced where a message is decoded (issue 13, defects
1, 3, 5, 8 and 9): each limit on both decoding paths, with a clean reason."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.contracts import (
    FUTURE_EVENT,
    TOMBSTONE,
    DecodeError,
    InferenceEvent,
    Limits,
    Tombstone,
    check_clock,
    decode_allocation,
    decode_billing,
    decode_events,
    decode_rate,
    is_tombstone,
    too_far_in_future,
)
from services.contracts.fast import EventRecord, allocation_record, event_records
from services.contracts.wire import Rejected, load_json
from services.runtime.config import Settings

EVENT: dict[str, Any] = {
    "event_id": "e1",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "llama",
    "engine": "vllm",
    "request_id": "r1",
    "started_at": "2024-01-01T00:00:00Z",
    "finished_at": "2024-01-01T00:00:30Z",
    "prompt_tokens": 10,
    "cached_prompt_tokens": 2,
    "completion_tokens": 5,
    "status": "ok",
    "gpu_count": 2,
    "attributes": {"region": "eu"},
}
RATE: dict[str, Any] = {
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
    "source": "list",
    "provider": "aws",
    "instance_type": "p5.48xlarge",
    "gpu_model": "H100",
    "gpu_count": 8,
    "region": "us-east-1",
}
BILL: dict[str, Any] = {
    "type": "inferledger.billing_line.v1",
    "line_id": "l1",
    "resource_id": "node-1",
    "period_start": "2024-01-01T00:00:00Z",
    "period_end": "2024-01-01T01:00:00Z",
    "cost": "30.00",
    "currency": "USD",
    "charge_category": "usage",
    "source": "focus",
    "provider": "aws",
    "sku": "sku-1",
    "pricing_category": "standard",
    "description": "GPU hours",
}
ENTRY: dict[str, Any] = {
    "entry_id": "0123456789abcdef0123",
    "entry_kind": "usage",
    "cost_basis": "provisional",
    "tenant_id": "acme",
    "model": "llama",
    "resource_id": "node-1",
    "bucket_start": "2024-01-01T00:00:00Z",
    "bucket_seconds": 60,
    "amount": "0.1",
    "currency": "USD",
    "billing_line_ids": ["l1"],
}
ALLOCATION: dict[str, Any] = {
    "type": "inferledger.cost_allocation.v1",
    "resource_id": "node-1",
    "bucket_start": "2024-01-01T00:00:00Z",
    "bucket_seconds": 60,
    "entries": [ENTRY],
    "counted_events": [["e1", "ok"]],
}


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def rejected_event(message: dict[str, Any], limits: Limits | None = None) -> str:
    """The detail of a rejected event, on both paths (the fast path must defer)."""
    data = raw(message)
    assert event_records(data, limits or Limits()) is None
    with pytest.raises(DecodeError) as err:
        decode_events(data, limits)
    assert err.value.reason == "invalid_event"
    return err.value.detail


def test_the_plain_messages_are_accepted():
    assert event_records(raw(EVENT)) is not None
    assert len(decode_events(raw(EVENT)).events) == 1
    decode_rate(raw(RATE))
    decode_billing(raw(BILL))
    assert allocation_record(raw(ALLOCATION)) is not None
    decode_allocation(raw(ALLOCATION))


# -- 1. control characters (defect 5: a NUL in model or event_id was a poison pill) -------------

BAD_CHARACTERS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f"]


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
@pytest.mark.parametrize(
    "name", ["event_id", "tenant_id", "resource_id", "model", "engine", "request_id"]
)
def test_a_control_character_in_an_event_id_or_name_is_rejected(name, bad):
    message = {**EVENT, name: f"a{bad}b"}
    if name == "resource_id":
        batch = {"resource_id": f"a{bad}b", "events": [message]}
        assert event_records(raw(batch)) is None
        decoded = decode_events(raw(batch))  # each event is rejected with its reason
        assert decoded.events == [] and len(decoded.rejected) == 1
        assert "resource_id: contains a control character" in decoded.rejected[0].detail
    detail = rejected_event(message)
    assert f"{name}: contains a control character" in detail


def test_a_control_character_in_one_event_of_a_batch_rejects_that_event_only():
    batch = {"resource_id": "node-1", "events": [EVENT, {**EVENT, "event_id": "e\x002"}]}
    assert event_records(raw(batch)) is None
    decoded = decode_events(raw(batch))
    assert [e.event_id for e in decoded.events] == ["e1"]
    assert [r.reason for r in decoded.rejected] == ["invalid_event"]
    assert "event_id: contains a control character" in decoded.rejected[0].detail


@pytest.mark.parametrize("bad", ["\x00", "\x1f", "\x85"])
@pytest.mark.parametrize(
    "name", ["resource_id", "source", "provider", "instance_type", "gpu_model", "region"]
)
def test_a_control_character_in_a_rate_is_rejected(name, bad):
    with pytest.raises(DecodeError) as err:
        decode_rate(raw({**RATE, name: f"x{bad}y"}))
    assert err.value.reason == "invalid_rate"
    assert f"{name}: contains a control character" in err.value.detail


@pytest.mark.parametrize(
    "name",
    ["line_id", "resource_id", "charge_category", "source", "provider", "sku", "pricing_category"],
)
def test_a_control_character_in_a_billing_line_is_rejected(name):
    with pytest.raises(DecodeError) as err:
        decode_billing(raw({**BILL, name: "x\x00y"}))
    assert err.value.reason == "invalid_billing_line"
    assert f"{name}: contains a control character" in err.value.detail


def test_a_billing_description_may_hold_newlines_but_no_nul():
    line = decode_billing(raw({**BILL, "description": "GPU hours\n\tand more"}))
    assert line.description == "GPU hours\n\tand more"  # type: ignore[union-attr]
    with pytest.raises(DecodeError) as err:
        decode_billing(raw({**BILL, "description": "GPU\x00hours"}))
    assert "description: contains a NUL character" in err.value.detail


@pytest.mark.parametrize(
    "change",
    [
        {"resource_id": "node\x00-1"},
        {"entries": [{**ENTRY, "tenant_id": "ac\x00me"}]},
        {"entries": [{**ENTRY, "model": "lla\x1bma"}]},
        {"entries": [{**ENTRY, "billing_line_ids": ["l\x001"]}]},
        {"entries": [{**ENTRY, "entry_id": "0123456789abcdef\x000123"}]},
        {"counted_events": [["e\x001", "ok"]]},
    ],
)
def test_a_control_character_in_an_allocation_is_rejected(change):
    data = raw({**ALLOCATION, **change})
    assert allocation_record(data) is None
    with pytest.raises(DecodeError) as err:
        decode_allocation(data)
    assert err.value.reason == "invalid_allocation"
    assert "control character" in err.value.detail


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        ({"region": "e\x00u"}, "NUL"),
        ({"re\x00gion": "eu"}, "NUL"),
        ({"a": {"b": ["x", {"c": "\x00"}]}}, "NUL"),
        ({"a": [1.5, "INF"]}, "not finite"),  # "INF" is written 1e400 below (parsed as inf)
        ({"a": {"b": {"c": {}}}}, None),
        ({"a": json.loads("[" * 31 + "]" * 31)}, None),
        ({"a": json.loads("[" * 32 + "]" * 32)}, "levels deep"),
        ({"a": "\ud800"}, "invalid_json"),  # a lone surrogate escape
        ({"a": "line\nbreak", "b": None, "c": True, "d": 10**30}, None),
    ],
)
def test_attributes_refuse_what_postgres_jsonb_refuses(attributes, problem):
    data = raw({**EVENT, "attributes": attributes}).replace(b'"INF"', b"1e400")
    if problem is None:
        assert event_records(data) is not None
        assert decode_events(data).events[0].attributes == attributes
        return
    assert event_records(data) is None
    with pytest.raises(DecodeError) as err:
        decode_events(data)
    assert problem in (err.value.reason if problem == "invalid_json" else err.value.detail)


def test_an_escaped_nul_and_a_c1_control_are_seen_by_the_fast_path():
    for text in ('"e\\u00001"', '"e\\u00851"', '"e\xc2\x851"', '"e\\n1"'):
        data = raw(EVENT).replace(b'"e1"', text.encode("utf-8", "surrogatepass"))
        assert event_records(data) is None, text
        with pytest.raises(DecodeError):
            decode_events(data)


# -- 2. counts (defect 8: 10^30 tokens or GPUs were accepted) -----------------------------------


@pytest.mark.parametrize(
    ("name", "most"),
    [
        ("prompt_tokens", 10**9),
        ("cached_prompt_tokens", 10**9),
        ("completion_tokens", 10**9),
        ("gpu_count", 4096),
    ],
)
def test_counts_have_a_ceiling(name, most):
    fits = {**EVENT, name: most}
    if name == "cached_prompt_tokens":
        fits["prompt_tokens"] = most
    assert event_records(raw(fits)) is not None
    assert getattr(decode_events(raw(fits)).events[0], name) == most
    for too_many in (most + 1, 10**30):
        message = {**fits, name: too_many}
        if name == "cached_prompt_tokens":
            message["prompt_tokens"] = most
        assert "less than or equal to" in rejected_event(message)


def test_a_rates_gpu_count_has_the_same_ceiling():
    assert decode_rate(raw({**RATE, "gpu_count": 4096})).gpu_count == 4096  # type: ignore[union-attr]
    with pytest.raises(DecodeError) as err:
        decode_rate(raw({**RATE, "gpu_count": 10**30}))
    assert "gpu_count" in err.value.detail


# -- 3. the request's length (defect 9), the calendar (defect 3), the clock ---------------------


def test_a_request_is_at_most_a_day_long_by_default():
    day = {**EVENT, "finished_at": "2024-01-02T00:00:00Z"}
    assert event_records(raw(day)) is not None
    assert len(decode_events(raw(day)).events) == 1
    six_years = {**EVENT, "started_at": "2020-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00Z"}
    detail = rejected_event(six_years)
    assert "more than max_request_seconds (86400)" in detail
    assert "more than max_request_seconds" in rejected_event(
        {**EVENT, "finished_at": "2024-01-02T00:00:00.000001Z"}
    )


def test_the_longest_request_is_a_setting(monkeypatch):
    monkeypatch.setenv("INFERLEDGER_MAX_REQUEST_SECONDS", "60")
    monkeypatch.setenv("INFERLEDGER_MAX_FUTURE_SECONDS", "5")
    limits = Limits.from_settings(Settings())
    assert limits == Limits(max_request_seconds=60, max_future_seconds=5)
    assert Limits.from_settings(Settings(_env_file=None)) == limits
    minute = {**EVENT, "finished_at": "2024-01-01T00:01:00Z"}
    assert event_records(raw(minute), limits) is not None
    assert len(decode_events(raw(minute), limits).events) == 1
    longer = {**EVENT, "finished_at": "2024-01-01T00:01:01Z"}
    assert "more than max_request_seconds (60)" in rejected_event(longer, limits)
    batch = {"resource_id": "node-1", "events": [minute, {**longer, "event_id": "e2"}]}
    assert event_records(raw(batch), limits) is None
    decoded = decode_events(raw(batch), limits)
    assert [e.event_id for e in decoded.events] == ["e1"]
    assert "max_request_seconds (60)" in decoded.rejected[0].detail
    # a longer limit lets a longer request in
    week = Limits(max_request_seconds=7 * 86_400)
    two_days = {**EVENT, "finished_at": "2024-01-03T00:00:00Z"}
    assert event_records(raw(two_days), week) is not None
    assert len(decode_events(raw(two_days), week).events) == 1


def test_the_settings_defaults_are_the_contracts():
    s = Settings()
    assert (s.max_request_seconds, s.max_future_seconds) == (86_400, 300)
    assert Limits.from_settings(s) == Limits()


@pytest.mark.parametrize(
    "when",
    [
        "9999-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-01:00",  # astimezone overflowed: OverflowError, not a rejection
        "9998-12-31T23:30:00-01:00",  # year 9998 locally, 9999 in UTC
        "0001-01-01T00:00:00+01:00",  # astimezone overflowed the other way
        "0001-06-01T00:00:00Z",
    ],
)
def test_timestamps_at_the_ends_of_the_calendar_are_rejected_cleanly(when):
    detail = rejected_event({**EVENT, "started_at": when, "finished_at": when})
    assert "outside the years 0002 to 9998" in detail
    for decode, message, name in (
        (decode_rate, RATE, "effective_from"),
        (decode_billing, {**BILL, "period_end": "9999-12-31T23:59:59Z"}, "period_start"),
        (decode_allocation, ALLOCATION, "bucket_start"),
    ):
        data = raw({**message, name: when})
        with pytest.raises(DecodeError) as err:
            decode(data)
        assert "outside the years" in err.value.detail, (decode, when)
    assert allocation_record(raw({**ALLOCATION, "bucket_start": when})) is None


def test_the_last_accepted_instant_is_in_9998():
    when = "9998-12-31T23:59:59Z"
    assert event_records(raw({**EVENT, "started_at": when, "finished_at": when})) is not None
    assert decode_rate(raw({**RATE, "effective_from": when}))


def test_too_far_in_the_future_is_judged_against_a_wall_clock():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert not too_far_in_future(now + timedelta(seconds=300), now)
    assert too_far_in_future(now + timedelta(seconds=300, microseconds=1), now)
    assert not too_far_in_future(us + 300_000_000, now.timestamp())
    assert too_far_in_future(us + 300_000_001, now)
    assert too_far_in_future(now + timedelta(seconds=11), now, max_future_seconds=10)
    assert not too_far_in_future(now - timedelta(days=900), now)
    assert too_far_in_future(datetime(9998, 1, 1, tzinfo=UTC), time.time())


def test_check_clock_splits_events_with_the_future_event_reason():
    future = {**EVENT, "event_id": "e2", "finished_at": "2030-01-01T00:00:00Z"}
    future["started_at"] = "2029-12-31T23:59:00Z"
    batch = raw({"resource_id": "node-1", "events": [EVENT, future]})
    now = datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    records = event_records(batch)
    assert records is not None
    splits: list[
        tuple[list[EventRecord], list[Rejected]] | tuple[list[InferenceEvent], list[Rejected]]
    ] = [
        check_clock(records, now.timestamp(), 300),  # the fast path's records
        check_clock(decode_events(batch).events, now.timestamp(), 300),  # the models
    ]
    for ok, rejected in splits:
        assert [e.event_id for e in ok] == ["e1"]
        assert [r.reason for r in rejected] == [FUTURE_EVENT] == ["future_event"]
        assert rejected[0].payload["event_id"] == "e2"
        assert rejected[0].payload["finished_at"].startswith("2030-01-01T00:00:00")
        assert "limit 300 s" in rejected[0].detail
        json.dumps(rejected[0].payload)  # a dead-letter payload


# -- 4. tombstones and empty values (defect 1) ---------------------------------------------------


@pytest.mark.parametrize("decode", [decode_events, decode_rate, decode_billing, decode_allocation])
def test_a_tombstone_is_a_tombstone_not_a_type_error(decode):
    assert is_tombstone(None) and not is_tombstone(b"") and not is_tombstone(b"null")
    with pytest.raises(Tombstone) as err:
        decode(None)
    assert isinstance(err.value, DecodeError)
    assert err.value.reason == TOMBSTONE == "tombstone"
    with pytest.raises(Tombstone):
        load_json(None)
    assert event_records(None) is None and allocation_record(None) is None


@pytest.mark.parametrize("decode", [decode_events, decode_rate, decode_billing, decode_allocation])
@pytest.mark.parametrize("value", [b"", b"   ", b"null", "", b"\xef\xbb\xbf{}"])
def test_an_empty_value_is_a_clean_rejection(decode, value):
    with pytest.raises(DecodeError) as err:
        decode(value)
    assert not isinstance(err.value, Tombstone)
    assert err.value.reason in {"invalid_json", "invalid_message"}


# -- 6. deep nesting and odd JSON ------------------------------------------------------------------


@pytest.mark.parametrize("decode", [decode_events, decode_rate, decode_billing, decode_allocation])
@pytest.mark.parametrize(
    "value",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"events": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"attributes": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
        b'{"type": "x", "a": ' + b"[" * 10_000,
    ],
)
def test_deep_nesting_is_invalid_json_not_a_recursion_error(decode, value):
    with pytest.raises(DecodeError) as err:
        decode(value)
    assert err.value.reason == "invalid_json"
    assert event_records(value) is None and allocation_record(value) is None


@pytest.mark.parametrize(
    "value",
    [b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": "\\ud800"}', b'{"a": ' + b"1" * 5000 + b"}"],
)
def test_what_is_not_json_is_invalid_json(value):
    with pytest.raises(DecodeError) as err:
        decode_events(value)
    assert err.value.reason == "invalid_json"


def test_a_lone_surrogate_in_a_str_message_is_invalid_utf8():
    with pytest.raises(DecodeError) as err:
        decode_events(json.dumps({**EVENT, "model": "\ud800"}, ensure_ascii=False))
    assert err.value.reason == "invalid_utf8"


# -- 7. money -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("-Infinity", "finite"),
        ("sNaN", "finite"),
        ("1e400", "less than"),
        ("1e999999999999999999", "less than"),
        ("1e-999999", "decimal places"),
        ("0." + "1" * 31, "decimal places"),
        ("-1", "price_per_hour is negative"),
        ("-0.000001", "price_per_hour is negative"),
        (36.0, "decimal string"),
        (1e400, "invalid_json"),  # json.dumps writes Infinity
        (10**30, "decimal string"),
    ],
)
def test_a_rate_refuses_money_that_is_not_a_finite_decimal_string(price, message):
    with pytest.raises(DecodeError) as err:
        decode_rate(raw({**RATE, "price_per_hour": price}))
    assert message in (err.value.reason if message == "invalid_json" else err.value.detail)


def test_a_billing_cost_may_be_negative_but_finite():
    line = decode_billing(raw({**BILL, "cost": "-20.00", "charge_category": "credit"}))
    assert line.cost == Decimal("-20.00")  # type: ignore[union-attr]
    assert decode_billing(raw({**BILL, "cost": "0." + "1" * 30})).cost  # type: ignore[union-attr]
    for cost in ("NaN", "-Infinity", "-1e400", "1e-31"):
        with pytest.raises(DecodeError) as err:
            decode_billing(raw({**BILL, "cost": cost}))
        assert err.value.reason == "invalid_billing_line"


def test_a_model_built_in_python_keeps_the_limits():
    """The emitter and the gateway build models from Python data: same limits (default)."""
    with pytest.raises(ValueError, match="max_request_seconds"):
        InferenceEvent.model_validate({**EVENT, "finished_at": "2024-01-03T00:00:00Z"})
    with pytest.raises(ValueError, match="control character|pattern"):
        InferenceEvent.model_validate({**EVENT, "model": "a\x00"})
