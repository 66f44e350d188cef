"""The msgspec fast path accepts only what the pydantic models accept, with the same values."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.attribution.encode import to_request
from services.contracts import DecodeError, Limits, decode_allocation, decode_events
from services.contracts.fast import allocation_record, event_records
from services.ledger.db import counted_set, entry_row, record_row
from services.ledger.writer import LedgerDecoder
from services.runtime.config import Settings

# strings that are fine, and strings that pydantic strips, or rejects, or that are at a limit
TEXT = st.one_of(
    st.text(min_size=1, max_size=8),
    st.sampled_from(["a", " a", "a ", "\ta", "a\n", "", "x" * 128, "x" * 129, "é", "a\x1f"]),
    # control characters (the contract refuses them in ids and names) and a lone surrogate
    st.sampled_from(["a\x00", "\x00", "a\x00b", "a\x7fb", "a\x85b", "a\x9f", "a\nb", "a\ud800"]),
)
TIMESTAMP = st.one_of(
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:10.5Z",
            "2024-01-01T00:00:10.123456Z",
            "2024-01-01T00:00:10.1234567Z",
            "2024-01-01T00:00:10.9999999Z",
            "2024-01-01T01:00:05+01:00",
            "2024-01-01T00:00:05-00:00",
            "2024-01-01T00:00:05+0100",
            "2024-01-01 00:00:05Z",
            "2024-01-01t00:00:05z",
            "2024-01-01T00:00:05",
            "2024-01-01T00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2024-02-30T00:00:00Z",
            # the calendar's ends: the contract takes years 0002..9998 in UTC
            "9998-12-31T23:59:59Z",
            "9998-12-31T23:30:00-01:00",
            "9999-01-01T00:00:00Z",
            "0002-01-01T00:00:00Z",
            "0002-01-01T00:30:00+01:00",
            # a request of exactly a day (the default limit) from the usual start, and longer
            "2024-01-02T00:00:00.250Z",
            "2024-01-02T00:00:00.251Z",
            "2030-01-01T00:00:00Z",
        ]
    ),
    st.integers(min_value=0, max_value=2_000_000_000),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
COUNT = st.one_of(
    st.integers(min_value=-2, max_value=10**6),
    st.sampled_from([1.0, 2.5, "5", True, None, 2**70]),
    # the contract's ceilings: 10^9 tokens, 4,096 GPUs
    st.sampled_from([10**9, 10**9 + 1, 4096, 4097, 10**30]),
)


FUZZ: dict[str, Any] = {
    "event_id": TEXT,
    "tenant_id": TEXT,
    "resource_id": TEXT,
    "model": TEXT,
    "engine": TEXT,
    "started_at": TIMESTAMP,
    "finished_at": TIMESTAMP,
    "prompt_tokens": COUNT,
    "completion_tokens": COUNT,
    "status": st.sampled_from(["ok", "error", "cancelled", "OK", "done"]),
    "type": st.sampled_from(["inferledger.inference_event.v1", "other"]),
    "request_id": st.one_of(st.none(), TEXT),
    "first_token_at": st.one_of(st.none(), TIMESTAMP),
    "cached_prompt_tokens": COUNT,
    "gpu_count": COUNT,
    "attributes": st.one_of(
        st.none(),
        st.dictionaries(TEXT, st.integers() | st.text(max_size=3), max_size=2),
        st.sampled_from(
            [
                {"a": "\x00"},
                {"a\x00": 1},
                {"a": {"b": ["\x00"]}},
                {"a": 1.5},
                {"a": json.loads("[" * 31 + "]" * 31)},
                {"a": json.loads("[" * 32 + "]" * 32)},
                {"a": "\n\x85"},
            ]
        ),
    ),
    "unknown_field": st.just(1),
}


@st.composite
def events(draw: Any, resource: str | None = None) -> dict[str, Any]:
    """An ordinary event with a few fields changed, some left out, or one added."""
    e = plain_event(draw(st.integers(0, 9)))
    for name in draw(st.lists(st.sampled_from(sorted(FUZZ)), max_size=3, unique=True)):
        e[name] = draw(FUZZ[name])
    for name in draw(st.lists(st.sampled_from(sorted(e)), max_size=1)):
        del e[name]
    if resource is not None:
        e["resource_id"] = resource
    return e


def plain_event(n: int, resource: str = "node-1") -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "tenant_id": "acme",
        "resource_id": resource,
        "model": "llama",
        "engine": "vllm",
        "started_at": "2024-01-01T00:00:00.250Z",
        "first_token_at": "2024-01-01T00:00:01Z",
        "finished_at": "2024-01-01T00:00:02.5Z",
        "prompt_tokens": 100,
        "cached_prompt_tokens": 10,
        "completion_tokens": 5,
        "status": "ok",
        "gpu_count": 2,
        "attributes": {"region": "eu"},
    }


LIMITS = st.sampled_from([Limits(), Limits(max_request_seconds=2)])


def same_events(raw: bytes, limits: Limits | None = None) -> None:
    fast = event_records(raw, limits or Limits())
    if fast is None:
        return  # the full decoder decides, as before
    slow = decode_events(raw, limits)  # must accept all of it
    assert not slow.rejected and slow.end_of_input is None
    assert [to_request(e) for e in fast] == [to_request(e) for e in slow.events]
    for f, s in zip(fast, slow.events, strict=True):
        assert (f.request_id, f.engine, f.attributes) == (s.request_id, s.engine, s.attributes)
        assert f.first_token_at == s.first_token_at


@settings(max_examples=400, deadline=None)
@given(events(), LIMITS)
def test_an_event_the_fast_path_accepts_is_the_same_event_for_the_models(event, limits):
    same_events(json.dumps(event).encode(), limits)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(events(resource="node-1"), min_size=0, max_size=3),
    st.sampled_from(["node-1", " node-1", "node\x00-1"]),
    LIMITS,
)
def test_a_batch_the_fast_path_accepts_is_the_same_batch_for_the_models(items, resource, limits):
    raw = json.dumps({"resource_id": resource, "events": items}).encode()
    same_events(raw, limits)


def test_the_fast_path_takes_ordinary_events_and_batches():
    one = json.dumps(plain_event(1)).encode()
    batch = json.dumps({"resource_id": "node-1", "events": [plain_event(n) for n in range(3)]})
    assert event_records(one) is not None
    records = event_records(batch.encode())
    assert records is not None and [r.event_id for r in records] == ["e0", "e1", "e2"]


def test_the_fast_path_leaves_doubtful_messages_to_the_models():
    mixed = [plain_event(1), plain_event(2, resource="node-2")]
    doubtful = [
        {**plain_event(1), "event_id": " e1"},  # pydantic strips it
        {**plain_event(1), "finished_at": "2024-01-01T00:00:02.1234567Z"},  # truncated there
        {**plain_event(1), "prompt_tokens": "100"},  # lax coercion
        {**plain_event(1), "cached_prompt_tokens": 101},  # a cross-field rule
        {"resource_id": "node-1", "events": mixed},  # a batch with another resource
    ]
    for message in doubtful:
        raw = json.dumps(message).encode()
        assert event_records(raw) is None
        with contextlib.suppress(DecodeError):  # the full decoder still decides
            decode_events(raw)


ENTRY = {
    "entry_id": "0123456789abcdef0123",
    "entry_kind": "usage",
    "cost_basis": "provisional",
    "tenant_id": "acme",
    "model": "llama",
    "resource_id": "node-1",
    "bucket_start": "2024-01-01T00:00:00Z",
    "bucket_seconds": 60,
    "completions": 2,
    "failed_requests": 0,
    "prompt_tokens": 10,
    "cached_prompt_tokens": 0,
    "completion_tokens": 3,
    "work_units": "22.000000000",
    "busy_seconds": "1.5",
    "amount": "0.123456789012",
    "currency": "USD",
    "billing_line_ids": [],
}
MONEY = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=12).map(str),
    st.sampled_from([" 1.5", "1e-3", "NaN", "Infinity", "1_0", "abc", "-0.000000000000"]),
    st.sampled_from([1.5, 2, True, None]),
)


@settings(max_examples=300, deadline=None)
@given(
    amount=MONEY,
    work=MONEY,
    currency=st.sampled_from(["USD", "usd", "USD ", "EURO"]),
    bucket_start=TIMESTAMP,
    counted=st.lists(st.tuples(TEXT, st.sampled_from(["ok", "error", "x"])), max_size=3),
)
def test_an_allocation_the_fast_path_accepts_gives_the_same_rows(
    amount, work, currency, bucket_start, counted
):
    entry = {**ENTRY, "amount": amount, "work_units": work, "currency": currency}
    entry["bucket_start"] = bucket_start
    message = {
        "type": "inferledger.cost_allocation.v1",
        "resource_id": "node-1",
        "bucket_start": bucket_start,
        "bucket_seconds": 60,
        "entries": [entry],
        "counted_events": counted,
    }
    raw = json.dumps(message).encode()
    fast = allocation_record(raw)
    rows = None if fast is None else [record_row(e) for e in fast.entries]
    if fast is None or rows is None or None in rows:
        return
    slow = decode_allocation(raw)
    assert rows == [entry_row(e) for e in slow.entries]  # type: ignore[union-attr]
    assert counted_set(fast.resource_id, fast.bucket_start, fast.counted_events) == counted_set(
        slow.resource_id,  # type: ignore[union-attr]
        slow.bucket_start,  # type: ignore[union-attr]
        slow.counted_events,  # type: ignore[union-attr]
    )


def test_the_fast_path_takes_the_processors_allocations():
    raw = json.dumps(
        {
            "type": "inferledger.cost_allocation.v1",
            "resource_id": "node-1",
            "bucket_start": "2024-01-01T00:00:00Z",
            "bucket_seconds": 60,
            "entries": [ENTRY],
            "counted_events": [["e1", "ok"]],
        }
    ).encode()
    fast = allocation_record(raw)
    assert fast is not None
    assert [record_row(e) for e in fast.entries] == [
        entry_row(e)
        for e in decode_allocation(raw).entries  # type: ignore[union-attr]
    ]


def test_an_entry_beyond_the_ledger_columns_is_dead_lettered_with_its_reason():
    """An out-of-range value would fail the writer's whole Postgres batch: it is refused at
    decode instead, on both paths (an amount just inside the column is written)."""
    decoder = LedgerDecoder(Settings())
    topic = decoder.alloc_topic
    cases = [
        ("amount", "1" + "0" * 26, False),
        ("amount", "-1" + "0" * 26 + ".5", False),
        ("amount", "9" * 25 + ".999999999999", True),  # 38 digits: the column's widest
        ("work_units", "1e32", False),
        ("busy_seconds", "100000000000000", False),
        ("completions", 2**31, False),
        ("completion_tokens", 2**63, False),
    ]
    for field, value, fits in cases:
        message = {
            "type": "inferledger.cost_allocation.v1",
            "resource_id": "node-1",
            "bucket_start": "2024-01-01T00:00:00Z",
            "bucket_seconds": 60,
            "entries": [{**ENTRY, field: value}],
        }
        batch = decoder.decode([(topic, 0, 7, json.dumps(message).encode())])
        if fits:
            assert len(batch.entries) == 1 and not batch.dead_letters, field
            continue
        assert batch.entries == [] and len(batch.dead_letters) == 1, (field, value)
        letter = json.loads(batch.dead_letters[0][1])
        assert letter["reason"] == "invalid_allocation"
        assert field in letter["detail"], letter["detail"]
