"""A fast path for the hot messages, with the pydantic models still the judge.

Decoding and validating an inference event with pydantic costs about 14 µs here, more than
the accounting for it. msgspec decodes the same JSON into plain structs in about 2 µs. The
structs below mirror the contract models, and every check the models make is made again here.
Where the two libraries could disagree (whitespace that pydantic strips, fractions finer than a
microsecond, dates at the edge of the calendar, lax coercions such as ``"5"`` for an int), the
fast path does not decide: it answers ``None`` and the caller uses the full decoder in
:mod:`services.contracts.wire`, which also explains every rejection. So a message the fast path
accepts is one the models accept, with the same values (a hypothesis test holds them to it).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec

from services.contracts.models import INT4_MAX, INT8_MAX

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Count = Annotated[int, msgspec.Meta(ge=0)]


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
    gpu_count: Annotated[int, msgspec.Meta(ge=1)] = 1
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


def _in_calendar(ts: datetime) -> bool:
    """Safely inside years 1..9999 in UTC too (pydantic rejects an instant outside them)."""
    return 1 < ts.year < 9999


def _valid(e: EventRecord) -> bool:
    """The models' other checks: what pydantic strips, the calendar, and the cross-field rules."""
    started, finished, first = e.started_at, e.finished_at, e.first_token_at
    return (
        e.cached_prompt_tokens <= e.prompt_tokens
        and started <= finished
        and (first is None or started <= first <= finished)
        and _in_calendar(started)
        and _in_calendar(finished)
        and (first is None or _in_calendar(first))
        # _plain, inline for the required strings (per event)
        and e.event_id.strip() is e.event_id
        and e.tenant_id.strip() is e.tenant_id
        and e.resource_id.strip() is e.resource_id
        and e.model.strip() is e.model
        and e.engine.strip() is e.engine
        and _plain(e.request_id)
        and (e.attributes is None or all(_plain(k) for k in e.attributes))
    )


def event_records(raw: bytes) -> list[EventRecord] | None:
    """The events of a valid event or batch message, or None: then ask the full decoder."""
    if _FINE_FRACTION.search(raw) is not None:
        return None
    try:
        if b'"events"' in raw:
            batch = _batch.decode(raw)
            events = batch.events
            resource = batch.resource_id
            if not _plain(resource):
                return None
            for e in events:
                if e.resource_id != resource or not _valid(e):
                    return None
            return events
        one = _one.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return [one] if _valid(one) else None


def to_builtins(e: EventRecord) -> Any:
    """The event as JSON-ready data (for a dead-letter payload)."""
    return msgspec.to_builtins(e)


def money(text: str) -> Decimal | None:
    """A decimal string as the models read it (``Money``), or None when they might not."""
    if text.strip() is not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


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


def _entry_valid(e: EntryRecord) -> bool:
    return (
        _in_calendar(e.bucket_start)
        and _plain(e.entry_id)
        and _plain(e.tenant_id)
        and _plain(e.model)
        and _plain(e.resource_id)
        and _plain(e.currency)
        and all(_plain(x) for x in e.billing_line_ids)
    )


def allocation_record(raw: bytes) -> AllocationRecord | None:
    """A valid allocation message, or None: then ask the full decoder. Money is checked by
    :func:`money` when it is read."""
    if _FINE_FRACTION.search(raw) is not None:
        return None
    try:
        a = _allocation.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not (_in_calendar(a.bucket_start) and _plain(a.resource_id)):
        return None
    if not all(_entry_valid(e) for e in a.entries):
        return None
    if not all(_plain(event_id) for event_id, _ in a.counted_events):
        return None
    return a
