"""Fuzz every decoder (issue 13, "a fuzz test of every decoder that finds nothing but clean
rejections"): whatever the bytes, a decoder gives a valid message inside every limit of
DESIGN.md section 2, or a ``DecodeError`` with a reason; never another exception (RecursionError,
OverflowError, TypeError, MemoryError...), never a hang.

Inputs: arbitrary bytes, and the valid shapes of every message type with one to three values
(anywhere in the tree) replaced by hostile ones: NaN, Infinity, 1e400, huge and negative numbers,
10,000 levels of nesting, 5 MB strings, invalid UTF-8, lone surrogates, NUL and other control
characters, unicode, SQL text, wrong types; fields removed or added. Hostile JSON tokens are
spliced in as raw bytes, so the parser sees exactly them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contracts import (
    BillingLine,
    CostAllocation,
    DecodeError,
    EndOfInput,
    GpuRate,
    InferenceEvent,
    decode_allocation,
    decode_billing,
    decode_events,
    decode_rate,
)
from services.contracts.fast import AllocationRecord, EventRecord, allocation_record, event_records
from services.contracts.fast import money as fast_money
from services.contracts.models import (
    MAX_GPUS,
    MAX_REQUEST_SECONDS,
    MAX_TOKENS,
    PRICE_LIMIT,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    attributes_problem,
)
from services.ingest.focus import read_focus

M = TypeVar("M", GpuRate, BillingLine, CostAllocation)

EVENT: dict[str, Any] = {
    "type": "inferledger.inference_event.v1",
    "event_id": "e1",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "llama",
    "engine": "vllm",
    "request_id": "r1",
    "started_at": "2024-01-01T00:00:00Z",
    "first_token_at": "2024-01-01T00:00:01Z",
    "finished_at": "2024-01-01T00:00:30Z",
    "prompt_tokens": 10,
    "cached_prompt_tokens": 2,
    "completion_tokens": 5,
    "status": "ok",
    "gpu_count": 2,
    "attributes": {"region": "eu", "tags": ["a", {"b": 1}]},
}
BATCH = {
    "type": "inferledger.inference_event_batch.v1",
    "resource_id": "node-1",
    "events": [EVENT, {**EVENT, "event_id": "e2"}],
}
RATE = {
    "type": "inferledger.gpu_rate.v1",
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
    "effective_to": "2024-01-02T00:00:00Z",
    "source": "list",
    "provider": "aws",
    "gpu_count": 8,
    "region": "eu",
}
BILL = {
    "type": "inferledger.billing_line.v1",
    "line_id": "l1",
    "resource_id": "node-1",
    "period_start": "2024-01-01T00:00:00Z",
    "period_end": "2024-01-01T01:00:00Z",
    "cost": "-30.00",
    "currency": "USD",
    "charge_category": "credit",
    "sku": "s",
    "description": "d",
}
ENTRY = {
    "entry_id": "0123456789abcdef0123",
    "entry_kind": "usage",
    "cost_basis": "provisional",
    "tenant_id": "acme",
    "model": "llama",
    "resource_id": "node-1",
    "bucket_start": "2024-01-01T00:00:00Z",
    "bucket_seconds": 60,
    "prompt_tokens": 10,
    "work_units": "22",
    "amount": "0.1",
    "currency": "USD",
    "billing_line_ids": ["l1"],
}
ALLOCATION = {
    "type": "inferledger.cost_allocation.v1",
    "resource_id": "node-1",
    "bucket_start": "2024-01-01T00:00:00Z",
    "bucket_seconds": 60,
    "entries": [ENTRY],
    "counted_events": [["e1", "ok"]],
}
MARKER = {"type": "inferledger.control.end_of_input.v1", "run_id": "run-1"}
SHAPES = [EVENT, BATCH, RATE, BILL, ALLOCATION, MARKER]

BIG = b'"' + b"x" * (5 * 1024 * 1024) + b'"'  # a 5 MB string
DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
RAW_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1" * 5000,
    b"-" + b"9" * 40,
    b"1e-400",
    b"-1",
    b"0",
    b"4097",
    b"1000000001",
    b"1" + b"0" * 30,
    DEEP_ARRAY,
    DEEP_OBJECT,
    BIG,
    b'"\xff\xfe"',  # invalid UTF-8
    b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate (invalid UTF-8)
    b'"\\ud800"',  # a lone surrogate escape
    b'"\\udc00x"',
    b'"a\\u0000b"',
    b'"\\u0000"',
    b'"a\\u001bb"',
    b'"a\\u0085b"',
    b'"a\xc2\x85b"',
    b'"a\\nb"',
    b'"\\t"',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'""',
    b"[1, 2",  # truncated
    b'"2024-01-01T00:00:00"',  # naive
    b'"9999-12-31T23:59:59-01:00"',
    b'"0001-01-01T00:00:00+01:00"',
    b'"9999-12-31T23:59:59.999999Z"',
    b'"2024-02-30T00:00:00Z"',
    b'"2030-01-01T00:00:00Z"',
    b'"1970-01-01T00:00:00Z"',
    b'"NaN"',
    b'"Infinity"',
    b'"-Infinity"',
    b'"1e400"',
    b'"-1e400"',
    b'"1e-999999"',
    b'"-36.00"',
    b'"0.' + b"1" * 40 + b'"',
    b'"' + b"9" * 5000 + b'"',
]
TEXT_VALUES = [
    "'; DROP TABLE ledger_entries;--",
    "Robert'); DROP TABLE x;--",
    "ünïcødé 😀 中文",
    "\u202etxet",
    "x" * 129,
    "x" * 257,
    " padded ",
    "",
    "USD",
    "usd",
    "ok",
    "error",
    "inferledger.inference_event.v1",
    "inferledger.control.end_of_input.v1",
    "node-2",
]


class Raw:
    """A JSON token spliced into the message as it is."""

    def __init__(self, data: bytes) -> None:
        self.data = data


HOSTILE = st.one_of(
    st.sampled_from(RAW_TOKENS).map(Raw),
    st.sampled_from(TEXT_VALUES),
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(paths(v, (*prefix, i)))
    return out


def copy(node: Any) -> Any:
    return json.loads(json.dumps(node))


def serialise(node: Any) -> bytes:
    raws: list[bytes] = []

    def placeholder(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.data)
            return f"\x02RAW{len(raws) - 1}\x02"
        raise TypeError(type(o).__name__)

    text = json.dumps(node, default=placeholder, ensure_ascii=False, allow_nan=True)
    data = text.encode("utf-8", "surrogatepass")
    for i, token in enumerate(raws):
        data = data.replace(json.dumps(f"\x02RAW{i}\x02").encode(), token, 1)
    return data


@st.composite
def messages(draw: Any) -> bytes:
    """A valid message of some type with a few values replaced, removed or added."""
    message = copy(draw(st.sampled_from(SHAPES)))
    candidates = paths(message)
    for path in draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3)):
        parent = message
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
            if action == "set":
                parent[path[-1]] = draw(HOSTILE)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["extra", "", "\x00"]))] = draw(HOSTILE)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced a parent: nothing there any more
    return serialise(message)


# -- what an accepted message must satisfy ---------------------------------------------------


def clean(s: str | None) -> bool:
    return s is None or not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in s)


def in_calendar(ts: datetime | None) -> bool:
    return ts is None or (ts.utcoffset() is not None and TIMESTAMP_MIN <= ts < TIMESTAMP_MAX)


def finite_money(d: Decimal, negative: bool) -> bool:
    return d.is_finite() and -PRICE_LIMIT < d < PRICE_LIMIT and (negative or d >= 0)


def check_event(e: InferenceEvent | EventRecord) -> None:
    for name in ("event_id", "tenant_id", "resource_id", "model", "engine"):
        value = getattr(e, name)
        assert isinstance(value, str) and value and clean(value), (name, value)
    assert clean(e.request_id)
    for count in (e.prompt_tokens, e.cached_prompt_tokens, e.completion_tokens):
        assert type(count) is int and 0 <= count <= MAX_TOKENS
    assert e.cached_prompt_tokens <= e.prompt_tokens
    assert type(e.gpu_count) is int and 1 <= e.gpu_count <= MAX_GPUS
    assert in_calendar(e.started_at) and in_calendar(e.finished_at)
    assert in_calendar(e.first_token_at)
    assert timedelta(0) <= e.finished_at - e.started_at <= timedelta(seconds=MAX_REQUEST_SECONDS)
    assert e.attributes is None or attributes_problem(e.attributes) is None
    assert e.status in ("ok", "error", "cancelled")


def check_rate(r: GpuRate) -> None:
    assert finite_money(r.price_per_hour, negative=False)
    for value in (r.resource_id, r.source, r.provider, r.instance_type, r.gpu_model, r.region):
        assert clean(value)
    assert in_calendar(r.effective_from) and in_calendar(r.effective_to)
    assert r.gpu_count is None or 1 <= r.gpu_count <= MAX_GPUS


def check_bill(b: BillingLine) -> None:
    assert finite_money(b.cost, negative=True)
    for value in (b.line_id, b.resource_id, b.charge_category, b.source, b.provider, b.sku):
        assert clean(value)
    assert clean(b.pricing_category)
    assert b.description is None or "\x00" not in b.description
    assert in_calendar(b.period_start) and in_calendar(b.period_end)
    assert b.period_start <= b.period_end


def check_allocation(a: CostAllocation | AllocationRecord) -> None:
    assert clean(a.resource_id) and in_calendar(a.bucket_start)
    for e in a.entries:
        assert clean(e.entry_id) and clean(e.tenant_id) and clean(e.model)
        assert clean(e.resource_id) and in_calendar(e.bucket_start)
        assert all(clean(x) for x in e.billing_line_ids)
        if isinstance(e.amount, Decimal):
            assert e.amount.is_finite()
    for event_id, _ in a.counted_events:
        assert clean(event_id)


def run(decode: Any, raw: bytes | str) -> Any:
    """The decoder's answer, or None for a DecodeError with a reason; anything else fails."""
    started = time.perf_counter()
    try:
        return decode(raw)
    except DecodeError as exc:
        assert isinstance(exc.reason, str) and exc.reason and isinstance(exc.detail, str)
        return None
    finally:
        assert time.perf_counter() - started < 5, "a decoder took more than 5 s"


def decode_one(
    decode: Callable[[bytes | str], M | EndOfInput],
    check: Callable[[M], None],
    kind: type[M],
    raw: bytes | str,
) -> None:
    """One single-message decoder: its message passes ``check``, or it is an end-of-input marker."""
    msg = run(decode, raw)
    if isinstance(msg, EndOfInput):
        assert clean(msg.run_id)
    elif msg is not None:
        assert isinstance(msg, kind)
        check(msg)


def decode_everything(raw: bytes | str) -> None:
    decoded = run(decode_events, raw)
    if decoded is not None:
        for e in decoded.events:
            check_event(e)
        for r in decoded.rejected:
            assert r.reason
            json.dumps(r.payload)  # a dead letter's payload can be written
    decode_one(decode_rate, check_rate, GpuRate, raw)
    decode_one(decode_billing, check_bill, BillingLine, raw)
    decode_one(decode_allocation, check_allocation, CostAllocation, raw)
    if isinstance(raw, bytes):
        records = run(event_records, raw)
        if records is not None:
            for e in records:
                check_event(e)
        record = run(allocation_record, raw)
        if record is not None:
            check_allocation(record)
            for e in record.entries:
                for text in (e.amount, e.work_units, e.busy_seconds):
                    value = fast_money(text)
                    assert value is None or value.is_finite()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.binary(max_size=300))
def test_every_decoder_rejects_arbitrary_bytes_cleanly(raw):
    decode_everything(raw)


@FUZZ
@given(messages(), st.booleans())
def test_every_decoder_rejects_hostile_messages_cleanly(raw, as_text):
    decode_everything(raw.decode("utf-8", "surrogateescape") if as_text else raw)


@FUZZ
@given(st.text(max_size=40))
def test_the_fast_money_reader_never_raises(text):
    value = fast_money(text)
    assert value is None or value.is_finite()


def test_the_hostile_tokens_in_every_field_of_every_shape():
    """Each hostile token once in each field of each message type (deterministic, so every
    token is certainly tried where it matters, besides the random combinations above)."""
    for shape in SHAPES:
        for path in paths(shape):
            for token in RAW_TOKENS:
                message = copy(shape)
                parent = message
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = Raw(token)
                if len(token) > 100_000 and path[-1] not in ("event_id", "attributes", "cost"):
                    continue  # the 5 MB string: a few fields are enough (time)
                decode_everything(serialise(message))


FOCUS_COLUMNS = [
    "ResourceId",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "BillingCurrency",
    "ProviderName",
    "SkuId",
    "PricingCategory",
    "ChargeDescription",
    "EffectiveCost",
]
FOCUS_ROW = [
    "node-1",
    "2024-01-01T00:00:00Z",
    "2024-01-01T01:00:00Z",
    "Usage",
    "USD",
    "aws",
    "sku-1",
    "Standard",
    "GPU hours",
    "30.00",
]
FOCUS_VALUES = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "1e-999999",
            "9" * 5000,
            "a\x00b",
            "\x00",
            "a\x1bb",
            "a\x85b",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59",
            "2024-02-30T00:00:00Z",
            "NULL",
            "",
            "'; DROP TABLE billing_lines;--",
            "ünïcødé 😀",
            "x" * 129,
        ]
    ),
    st.text(max_size=12),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(FOCUS_COLUMNS) - 1), FOCUS_VALUES), max_size=3))
def test_the_focus_adapter_rejects_hostile_rows_cleanly(changes):
    """``read_focus`` (read-only use here) yields a valid line or the reason of the row."""
    row = list(FOCUS_ROW)
    for column, value in changes:
        row[column] = value
    out = io.StringIO()
    csv.writer(out).writerows([FOCUS_COLUMNS, row])
    for _, _, line in read_focus(io.BytesIO(out.getvalue().encode("utf-8", "surrogatepass"))):
        if isinstance(line, BillingLine):
            check_bill(line)
        else:
            assert isinstance(line, str) and line.startswith("invalid row")


def test_the_checks_themselves_hold_for_the_valid_shapes():
    """The fuzz above would prove little if the valid shapes were rejected."""
    assert len(decode_events(json.dumps(EVENT).encode()).events) == 1
    assert len(decode_events(json.dumps(BATCH).encode()).events) == 2
    assert event_records(json.dumps(BATCH).encode()) is not None
    check_rate(decode_rate(json.dumps(RATE).encode()))  # type: ignore[arg-type]
    check_bill(decode_billing(json.dumps(BILL).encode()))  # type: ignore[arg-type]
    check_allocation(decode_allocation(json.dumps(ALLOCATION).encode()))  # type: ignore[arg-type]
    assert allocation_record(json.dumps(ALLOCATION).encode()) is not None
    assert math.isfinite(float(fast_money("1.5") or 0))
