"""A fast path for the hot messages, with the pydantic models still the judge.

Decoding and validating an inference event with pydantic costs about 14 µs here, more than
the accounting for it. msgspec decodes the same JSON into plain structs in about 2 µs. The
structs below mirror the contract models, and every check the models make is made again here.
Where the two libraries could disagree (whitespace that pydantic strips, fractions finer than a
microsecond, dates at the edge of the calendar, lax coercions such as ``"5"`` for an int), the
fast path does not decide: it answers ``None`` and the caller uses the full decoder in
:mod:`services.contracts.wire`, which also explains every rejection. So a message the fast path
accepts is one the models accept, with the same values (a hypothesis test holds them to it).

The input limits are the models' too: counts and GPUs by msgspec's constraints, the calendar and
the request's length in :func:`_valid`, and control characters only when the message could hold
one: a decoded string holds a control character (or a surrogate) only when the raw JSON has an
escape (a backslash) or a C1 control (UTF-8 bytes C2 80..C2 9F), since JSON forbids
raw C0 controls; so an ordinary message pays one ``bytes.__contains__`` for them, not a regex
per field.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec

from services.contracts.models import (
    DEFAULT_LIMITS,
    INT4_MAX,
    INT8_MAX,
    MAX_GPUS,
    MAX_TOKENS,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Limits,
    attributes_problem,
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class EventRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An ``InferenceEvent`` as plain data (same field names, so code reading events takes both)."""

    event_id: Id
    tenant_id: Id
    resource_id: Name
    model: Name
    engine: Name
    started_at: Timestamp
    finished_at: Timestamp
    prompt_tokens: Count
    completion_tokens: Count
    status: Literal["ok", "error", "cancelled"]
    type: Literal["inferledger.inference_event.v1"] = "inferledger.inference_event.v1"
    request_id: str | None = None
    first_token_at: Timestamp | None = None
    cached_prompt_tokens: Count = 0
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=MAX_GPUS)] = 1
    attributes: dict[str, Any] | None = None


class _Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    resource_id: Name
    events: Annotated[list[EventRecord], msgspec.Meta(min_length=1)]
    type: Literal["inferledger.inference_event_batch.v1"] = "inferledger.inference_event_batch.v1"


_one = msgspec.json.Decoder(EventRecord)
_batch = msgspec.json.Decoder(_Batch)
# pydantic truncates a fraction past microseconds, msgspec rounds it: leave those to pydantic
_FINE_FRACTION = re.compile(rb":\d\d[.,]\d{7}")  # seconds with 7 or more fraction digits


def _plain(s: str | None) -> bool:
    """No surrounding whitespace (pydantic would strip it; ``strip`` returns ``s`` itself when
    there is none, and it strips at least what pydantic strips)."""
    return s is None or s.strip() is s


# what the models' NO_CONTROL refuses, and the surrogates pydantic's str refuses
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _may_hold_control(raw: bytes) -> bool:
    """Whether a decoded string of ``raw`` may hold a control character or a surrogate."""
    return b"\\" in raw or b"\xc2" in raw


def _clean(s: str | None) -> bool:
    return s is None or _CONTROL.search(s) is None


def _in_calendar(ts: datetime) -> bool:
    """Inside the models' TIMESTAMP_MIN..TIMESTAMP_MAX (aware comparison: never overflows)."""
    return TIMESTAMP_MIN <= ts < TIMESTAMP_MAX


def _attributes_ok(attributes: dict[str, Any], escaped: bool) -> bool:
    for value in attributes.values():
        kind = type(value)
        if kind is not str and kind is not int and kind is not bool and value is not None:
            return attributes_problem(attributes) is None  # nested, or a float: look closer
    return not escaped or attributes_problem(attributes) is None


def _escaped_ok(e: EventRecord) -> bool:
    """No control character in the ids and names (only asked when the raw JSON had escapes)."""
    return (
        _clean(e.event_id)
        and _clean(e.tenant_id)
        and _clean(e.resource_id)
        and _clean(e.model)
        and _clean(e.engine)
        and _clean(e.request_id)
    )


def _valid(e: EventRecord, longest: timedelta, escaped: bool) -> bool:
    """The models' other checks: what pydantic strips, the calendar, the request's length, the
    attributes, control characters (``escaped``), and the cross-field rules."""
    started, finished, first = e.started_at, e.finished_at, e.first_token_at
    return (
        e.cached_prompt_tokens <= e.prompt_tokens
        and started <= finished
        and (first is None or started <= first <= finished)
        and _in_calendar(started)
        and _in_calendar(finished)
        and finished - started <= longest
        and (first is None or _in_calendar(first))
        # _plain, inline for the required strings (per event)
        and e.event_id.strip() is e.event_id
        and e.tenant_id.strip() is e.tenant_id
        and e.resource_id.strip() is e.resource_id
        and e.model.strip() is e.model
        and e.engine.strip() is e.engine
        and _plain(e.request_id)
        and (e.attributes is None or all(_plain(k) for k in e.attributes))
        and (e.attributes is None or _attributes_ok(e.attributes, escaped))
        and (not escaped or _escaped_ok(e))
    )


def event_records(raw: bytes | None, limits: Limits = DEFAULT_LIMITS) -> list[EventRecord] | None:
    """The events of a valid event or batch message, or None: then ask the full decoder (also
    for a tombstone, None, which :func:`services.contracts.wire.decode_events` reports as such).
    ``limits`` must be the ones given to the full decoder."""
    if not isinstance(raw, bytes) or _FINE_FRACTION.search(raw) is not None:
        return None
    longest = timedelta(seconds=limits.max_request_seconds)
    escaped = _may_hold_control(raw)
    try:
        if b'"events"' in raw:
            batch = _batch.decode(raw)
            events = batch.events
            resource = batch.resource_id
            if not _plain(resource):
                return None
            for e in events:
                if e.resource_id != resource or not _valid(e, longest, escaped):
                    return None
            return events
        one = _one.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return [one] if _valid(one, longest, escaped) else None


def to_builtins(e: EventRecord) -> Any:
    """The event as JSON-ready data (for a dead-letter payload)."""
    return msgspec.to_builtins(e)


_MONEY_SEEN: dict[str, Decimal] = {}  # text -> value: zeros and prices repeat in every entry


def money(text: str) -> Decimal | None:
    """A decimal string as the models read it (``Money``), or None when they might not."""
    value = _MONEY_SEEN.get(text)
    if value is not None:
        return value
    if text.strip() is not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if len(_MONEY_SEEN) >= 4096:  # bounded: amounts mostly differ, the zeros stay
        _MONEY_SEEN.clear()
    _MONEY_SEEN[text] = value
    return value


class EntryRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A ``LedgerEntry`` as plain data; money stays a string here (see :func:`money`), because
    msgspec would also read a JSON number as a Decimal, and the contract refuses those."""

    entry_id: Annotated[str, msgspec.Meta(min_length=16, max_length=64)]
    entry_kind: Literal["usage", "idle", "late_adjustment", "reconciliation"]
    cost_basis: Literal["provisional", "billed", "unpriced"]
    resource_id: Name
    bucket_start: Timestamp
    bucket_seconds: Annotated[int, msgspec.Meta(gt=0)]
    amount: str
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    tenant_id: str | None = None
    model: str | None = None
    completions: Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)] = 0
    failed_requests: Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)] = 0
    prompt_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT8_MAX)] = 0
    cached_prompt_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT8_MAX)] = 0
    completion_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT8_MAX)] = 0
    work_units: str = "0"
    busy_seconds: str = "0"
    billing_line_ids: list[str] = msgspec.field(default_factory=list)
    completions_within_slo: Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)] = 0
    cancelled_requests: Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)] = 0
    slo_miss_amount: str = "0"
    failed_amount: str = "0"
    cancelled_amount: str = "0"


class AllocationRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A ``CostAllocation`` as plain data."""

    resource_id: Name
    bucket_start: Timestamp
    bucket_seconds: Annotated[int, msgspec.Meta(gt=0)]
    entries: list[EntryRecord]
    type: Literal["inferledger.cost_allocation.v1"] = "inferledger.cost_allocation.v1"
    counted_events: list[tuple[Id, Literal["ok", "error", "cancelled"]]] = msgspec.field(
        default_factory=list
    )


_allocation = msgspec.json.Decoder(AllocationRecord)


def _entry_valid(e: EntryRecord, escaped: bool) -> bool:
    return (
        _in_calendar(e.bucket_start)
        and (
            not escaped
            or (
                _clean(e.entry_id)
                and _clean(e.tenant_id)
                and _clean(e.model)
                and _clean(e.resource_id)
                and all(_clean(x) for x in e.billing_line_ids)
            )
        )
        and _plain(e.entry_id)
        and _plain(e.tenant_id)
        and _plain(e.model)
        and _plain(e.resource_id)
        and _plain(e.currency)
        and all(_plain(x) for x in e.billing_line_ids)
    )


def allocation_record(raw: bytes | None) -> AllocationRecord | None:
    """A valid allocation message, or None: then ask the full decoder (also for a tombstone).
    Money is checked by :func:`money` when it is read."""
    if not isinstance(raw, bytes) or _FINE_FRACTION.search(raw) is not None:
        return None
    try:
        a = _allocation.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    escaped = _may_hold_control(raw)
    if not (_in_calendar(a.bucket_start) and _plain(a.resource_id)):
        return None
    if escaped and not _clean(a.resource_id):
        return None
    if not all(_entry_valid(e, escaped) for e in a.entries):
        return None
    if not all(_plain(event_id) for event_id, _ in a.counted_events):
        return None
    if escaped and not all(_clean(event_id) for event_id, _ in a.counted_events):
        return None
    return a
