"""What the attribution processor converts: contract messages into the core's values, and the
core's decisions into ``cost-allocations`` messages (the hot path's encoding, built from plain
dicts, and the reference encoding through the contract models that tests hold it to).

A ledger entry's fields come from the one column definition (``services.contracts.ledger``):
the core's :class:`Entry` names them the same, but for ``bucket_start`` (``bucket_start_us``).
"""

from __future__ import annotations

from datetime import timedelta
from operator import attrgetter
from typing import Any

import msgspec

from services.accounting import Bill, ClosedBucket, Entry, Rate, Request, from_us, to_us
from services.contracts import (
    BillingLine,
    CostAllocation,
    GpuRate,
    InferenceEvent,
    LedgerEntry,
    dumps,
)
from services.contracts.fast import EventRecord
from services.contracts.ledger import LEDGER_ENTRY

COUNTED_PER_MESSAGE = 5000
ALLOCATION_TYPE: str = CostAllocation.model_fields["type"].default
# (column, kind) in the contract's field order; the core's Entry holds the plain ones as is
_PLAN: tuple[tuple[str, str], ...] = tuple((c.name, c.kind) for c in LEDGER_ENTRY)
_PLAIN: tuple[str, ...] = tuple(
    c.name for c in LEDGER_ENTRY if c.kind not in ("timestamp", "text_array")
)


_EPOCH = from_us(0)
_ONE_US = timedelta(microseconds=1)


def to_request(event: InferenceEvent | EventRecord) -> Request:
    # positional: a NamedTuple built from keywords costs three times as much (per event);
    # times as to_us() gives them, inline (a naive time cannot be subtracted from the epoch)
    first = event.first_token_at
    return Request(
        event.event_id,
        event.tenant_id,
        event.model,
        event.resource_id,
        (event.started_at - _EPOCH) // _ONE_US,
        (event.finished_at - _EPOCH) // _ONE_US,
        event.prompt_tokens,
        event.cached_prompt_tokens,
        event.completion_tokens,
        event.status,
        event.gpu_count,
        None if first is None else (first - _EPOCH) // _ONE_US,
    )


def to_rate(rate: GpuRate) -> Rate:
    return Rate(
        resource_id=rate.resource_id,
        start_us=to_us(rate.effective_from),
        end_us=None if rate.effective_to is None else to_us(rate.effective_to),
        price_per_hour=rate.price_per_hour,
        currency=rate.currency,
    )


def to_ledger_entry(e: Entry) -> LedgerEntry:
    """The contract's entry (not validated again: the core built it from validated input)."""
    values = {name: getattr(e, name) for name in _PLAIN}
    values["bucket_start"] = from_us(e.bucket_start_us)
    values["billing_line_ids"] = list(e.billing_line_ids)
    return LedgerEntry.model_construct(**values)


def _iso(us: int) -> str:
    """A UTC instant as pydantic writes it (``...Z``, fraction only when there is one)."""
    return from_us(us).isoformat().replace("+00:00", "Z")


# the Entry's attribute for each column (bucket_start: the core keeps it as µs), read in one
# call per entry; where the money, the start and the text arrays are; the nullable columns
_ATTRS = attrgetter(*("bucket_start_us" if k == "timestamp" else n for n, k in _PLAN))
_NAMES = tuple(n for n, _ in _PLAN)
_MONEY_AT = tuple(i for i, (_, k) in enumerate(_PLAN) if k == "money")
_START_AT = tuple(i for i, (_, k) in enumerate(_PLAN) if k == "timestamp")
_ARRAY_AT = tuple(i for i, (_, k) in enumerate(_PLAN) if k == "text_array")
_NULLABLE = tuple(c.name for c in LEDGER_ENTRY if c.nullable)


def _entry_dict(e: Entry, start: str) -> dict[str, Any]:
    """An entry in the field order and form of ``LedgerEntry``'s JSON (None left out), field
    by field as the one column definition (``contracts/ledger.py``) lists them (the columns
    that are not nullable are never None in an Entry)."""
    v = list(_ATTRS(e))
    for i in _MONEY_AT:
        v[i] = format(v[i], "f")
    for i in _START_AT:
        v[i] = start
    for i in _ARRAY_AT:
        v[i] = list(v[i])
    d = dict(zip(_NAMES, v, strict=True))
    for name in _NULLABLE:
        if d[name] is None:
            del d[name]
    return d


_compact = msgspec.json.Encoder().encode  # compact UTF-8, like pydantic's JSON (a test holds it)


def allocation_messages(closed: ClosedBucket, bucket_seconds: int) -> list[bytes]:
    """One message per bucket decision; the counted event ids spill into further messages
    (with no entries) so that no message grows past Apache Kafka's default size limit.

    The bytes are exactly ``dumps(CostAllocation(...))`` (a unit test holds them to it), built
    from plain dicts because closing buckets is on the hot path and pydantic objects per entry
    cost more than the accounting itself."""
    counted = closed.counted
    chunks = [
        counted[i : i + COUNTED_PER_MESSAGE] for i in range(0, len(counted), COUNTED_PER_MESSAGE)
    ] or [[]]
    start = _iso(closed.bucket_start_us)
    entry_starts: dict[int, str] = {closed.bucket_start_us: start}
    messages = []
    for n, chunk in enumerate(chunks):
        entries = []
        if n == 0:
            for e in closed.entries:
                es = entry_starts.get(e.bucket_start_us)
                if es is None:
                    es = entry_starts[e.bucket_start_us] = _iso(e.bucket_start_us)
                entries.append(_entry_dict(e, es))
        message = {
            "type": ALLOCATION_TYPE,
            "resource_id": closed.resource_id,
            "bucket_start": start,
            "bucket_seconds": bucket_seconds,
            "entries": entries,
            "counted_events": [list(c) for c in chunk],
        }
        messages.append(_compact(message))
    return messages


def allocation_messages_via_models(closed: ClosedBucket, bucket_seconds: int) -> list[bytes]:
    """The reference encoding through the contract models (tests compare the two)."""
    counted = closed.counted
    chunks = [
        counted[i : i + COUNTED_PER_MESSAGE] for i in range(0, len(counted), COUNTED_PER_MESSAGE)
    ] or [[]]
    return [
        dumps(
            CostAllocation(
                resource_id=closed.resource_id,
                bucket_start=from_us(closed.bucket_start_us),
                bucket_seconds=bucket_seconds,
                entries=[to_ledger_entry(e) for e in closed.entries] if n == 0 else [],
                counted_events=chunk,
            )
        )
        for n, chunk in enumerate(chunks)
    ]


def to_bill(line: BillingLine, allocated: frozenset[str]) -> Bill | None:
    """The billing line as the core sees it, or None when it is not allocated to tenants."""
    if line.resource_id is None or line.charge_category.lower() not in allocated:
        return None
    return Bill(
        line_id=line.line_id,
        resource_id=line.resource_id,
        start_us=to_us(line.period_start),
        end_us=to_us(line.period_end),
        cost=line.cost,
        currency=line.currency,
    )
