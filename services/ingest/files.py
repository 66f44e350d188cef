"""File ingest: JSONL (or CSV for rates) in, validated batches per resource on Kafka out."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.contracts import (
    BillingLine,
    GpuRate,
    InferenceEvent,
    Price,
    dumps,
    encode_event_batch,
)
from services.contracts.wire import (
    BATCH_SEPARATOR,
    DecodeError,
    decode_events,
    explain,
    load_json,
)
from services.runtime.config import BILLING, EVENTS, PRICES, RATES, Settings
from services.runtime.kafka import dead_letter, make_producer


@dataclass
class IngestSummary:
    read: int = 0
    published: int = 0
    messages: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "published": self.published,
            "messages": self.messages,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
        }


def open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    return Path(path).open("rb")


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(stream, start=1):
        if line.strip():
            yield n, line.rstrip(b"\r\n")


def batch_events(
    events: Iterable[InferenceEvent], max_events: int, max_bytes: int
) -> Iterator[tuple[str, bytes, int]]:
    """Group events per resource into batch messages below both limits."""
    pending: dict[str, list[bytes]] = defaultdict(list)
    sizes: dict[str, int] = defaultdict(int)

    def emit(resource: str) -> tuple[str, bytes, int]:
        items = pending.pop(resource)
        sizes.pop(resource, None)
        return resource, encode_event_batch(resource, items), len(items)

    for event in events:
        raw = dumps(event)
        r = event.resource_id
        if pending.get(r) and (len(pending[r]) >= max_events or sizes[r] + len(raw) > max_bytes):
            yield emit(r)
        pending[r].append(raw)
        sizes[r] += len(raw) + BATCH_SEPARATOR
    for r in sorted(pending):
        yield emit(r)


def ingest_events(settings: Settings, stream: IO[bytes], source: str = "ingest") -> IngestSummary:
    summary = IngestSummary()
    topic = settings.topic(EVENTS)
    producer = make_producer(settings, compression_type="gzip")
    valid: list[InferenceEvent] = []
    try:
        for n, line in _lines(stream):
            summary.read += 1
            try:
                decoded = decode_events(line)
            except DecodeError as exc:
                summary.rejected[exc.reason] += 1
                producer.send(
                    f"{topic}.dlq",
                    dead_letter(
                        topic,
                        exc.reason,
                        f"line {n}: {exc.detail}",
                        line,
                        settings.dlq_payload_limit,
                        source=source,
                    ),
                )
                continue
            for rej in decoded.rejected:
                summary.rejected[rej.reason] += 1
                producer.send(
                    f"{topic}.dlq",
                    dead_letter(
                        topic,
                        rej.reason,
                        f"line {n}: {rej.detail}",
                        rej.payload,
                        settings.dlq_payload_limit,
                        source=source,
                    ),
                )
            if decoded.end_of_input is not None:  # only `run` writes control markers
                summary.rejected["control_message"] += 1
                producer.send(
                    f"{topic}.dlq",
                    dead_letter(
                        topic,
                        "control_message",
                        f"line {n}: an end-of-input marker is not input; `inferledger run` "
                        "writes its own",
                        line,
                        settings.dlq_payload_limit,
                        source=source,
                    ),
                )
            valid.extend(decoded.events)
        for resource, value, count in batch_events(
            valid, settings.max_batch_events, settings.max_message_bytes
        ):
            producer.send(topic, key=resource, value=value)
            summary.published += count
            summary.messages += 1
        producer.flush(60)
    finally:
        producer.close(10)
    return summary


def _rate_records(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, bytes, Any]]:
    data = stream.read()
    if fmt == "auto":
        fmt = "jsonl" if data.lstrip()[:1] in (b"{", b"[") else "csv"
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        for n, row in enumerate(reader, start=2):
            clean = {k: v for k, v in row.items() if v not in ("", None, "NULL")}
            yield n, json.dumps(row).encode(), clean
    else:
        for n, line in _lines(io.BytesIO(data)):
            try:
                yield n, line, load_json(line)
            except DecodeError as exc:
                yield n, line, exc


M = TypeVar("M", bound=BaseModel)


def _publish_valid(
    settings: Settings,
    topic_name: str,
    records: Iterable[tuple[str, bytes, Any]],
    model: type[M],
    key: Callable[[M], str],
    invalid: str,
    describe: Callable[[DecodeError | ValidationError], str],
    source: str,
) -> IngestSummary:
    """Validate each ``(where, raw, obj)`` record as ``model`` and publish it to the topic
    under ``key``; a record that cannot be one goes to ``<topic>.dlq`` with its reason
    (``invalid`` for a validation error) and ``where: describe(error)``."""
    summary = IngestSummary()
    topic = settings.topic(topic_name)
    producer = make_producer(settings)
    try:
        for where, raw, obj in records:
            summary.read += 1
            try:
                if isinstance(obj, DecodeError):
                    raise obj
                item = model.model_validate(obj)
            except (DecodeError, ValidationError) as exc:
                reason = exc.reason if isinstance(exc, DecodeError) else invalid
                summary.rejected[reason] += 1
                producer.send(
                    f"{topic}.dlq",
                    dead_letter(
                        topic,
                        reason,
                        f"{where}: {describe(exc)}",
                        raw,
                        settings.dlq_payload_limit,
                        source=source,
                    ),
                )
                continue
            producer.send(topic, key=key(item), value=dumps(item))
            summary.published += 1
            summary.messages += 1
        producer.flush(60)
    finally:
        producer.close(10)
    return summary


def ingest_rates(
    settings: Settings, stream: IO[bytes], fmt: str = "auto", source: str = "ingest"
) -> IngestSummary:
    records = ((f"line {n}", raw, obj) for n, raw, obj in _rate_records(stream, fmt))
    return _publish_valid(
        settings, RATES, records, GpuRate, lambda r: r.resource_id, "invalid_rate", str, source
    )


PER_MILLION = Decimal(1_000_000)
LITELLM_FIELDS = {
    "prompt_per_million": "input_cost_per_token",
    "cached_prompt_per_million": "cache_read_input_token_cost",
    "completion_per_million": "output_cost_per_token",
}


def litellm_prices(data: bytes, effective_from: datetime) -> Iterator[tuple[str, bytes, Any]]:
    """The LiteLLM model price map (``{model: {"input_cost_per_token": 1e-06, ...}}``, USD
    per token) as price records of the default list: per million tokens = per token x 10^6,
    exactly (the JSON numbers are read as decimals, never floats). A model without a cached
    input price is charged its input price for cached tokens. Yields (where, raw, record or
    the reason it is refused)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        yield "file", data[:2000], DecodeError("invalid_json", f"not a LiteLLM price map: {exc}")
        return
    if not isinstance(doc, dict):
        yield "file", data[:2000], DecodeError("invalid_message", "not a JSON object of models")
        return
    for model, entry in doc.items():
        where = f"model {model!r}"
        raw = json.dumps({model: entry}, default=str).encode()
        if model == "sample_spec":  # LiteLLM's documentation entry, not a model
            continue
        if not isinstance(entry, dict):
            yield where, raw, DecodeError("invalid_price", "its entry is not an object")
            continue
        record: dict[str, Any] = {
            "model": model,
            "currency": "USD",
            "effective_from": effective_from,
            "source": "litellm",
        }
        for ours, theirs in LITELLM_FIELDS.items():
            value = entry.get(theirs)
            if value is None and ours == "cached_prompt_per_million":
                value = entry.get("input_cost_per_token")
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                problem = "missing" if value is None else f"not a number: {value!r}"
                yield where, raw, DecodeError("invalid_price", f"{theirs} is {problem}")
                break
            record[ours] = format((Decimal(value) * PER_MILLION).normalize(), "f")
        else:
            yield where, raw, record


def _price_records(
    stream: IO[bytes], fmt: str, effective_from: datetime | None
) -> Iterator[tuple[str, bytes, Any]]:
    data = stream.read()
    if fmt == "litellm":
        yield from litellm_prices(data, effective_from or datetime.now(UTC).replace(microsecond=0))
        return
    for n, raw, obj in _rate_records(io.BytesIO(data), fmt):
        if effective_from is not None and isinstance(obj, dict):
            obj.setdefault("effective_from", effective_from)
        yield f"line {n}", raw, obj


def ingest_prices(
    settings: Settings,
    stream: IO[bytes],
    fmt: str = "auto",
    effective_from: datetime | None = None,
    source: str = "ingest",
) -> IngestSummary:
    """Publish prices (``Price`` JSONL or CSV, or the LiteLLM model price map) to ``prices``,
    keyed by model; what cannot be a price goes to ``prices.dlq`` with its reason."""
    return _publish_valid(
        settings,
        PRICES,
        _price_records(stream, fmt, effective_from),
        Price,
        lambda p: p.model,
        "invalid_price",
        lambda exc: exc.detail if isinstance(exc, DecodeError) else explain(exc),
        source,
    )


def ingest_billing(
    settings: Settings,
    stream: IO[bytes],
    fmt: str = "focus",
    cost_column: str = "EffectiveCost",
    source: str = "ingest",
) -> dict[str, Any]:
    """Publish billing lines (FOCUS CSV/gzip, or JSONL ``BillingLine``s) to ``gpu-billing``."""
    from services.ingest.focus import FocusSummary, read_focus, summarize

    topic = settings.topic(BILLING)
    producer = make_producer(settings, compression_type="gzip")
    summary = FocusSummary(cost_column)
    try:
        if fmt == "focus":
            records: Iterable[tuple[int, Any, Any]] = read_focus(stream, cost_column)
        else:
            records = _billing_jsonl(stream)
        for n, raw, line in records:
            summary.rows += 1
            if isinstance(line, str):
                summary.skipped[line.split(":")[0]] += 1
                if len(summary.examples) < 10:
                    summary.examples.append(f"line {n}: skipped, {line}")
                producer.send(
                    f"{topic}.dlq",
                    dead_letter(
                        topic,
                        "invalid_billing_line",
                        f"line {n}: {line}",
                        raw,
                        settings.dlq_payload_limit,
                        source=source,
                    ),
                )
                continue
            summarize(summary, n, raw if isinstance(raw, dict) else {}, line)
            producer.send(topic, key=line.resource_id or "unallocated", value=dumps(line))
            summary.published += 1
        producer.flush(60)
    finally:
        producer.close(10)
    return summary.as_dict()


def _billing_jsonl(stream: IO[bytes]) -> Iterator[tuple[int, Any, BillingLine | str]]:
    for n, line in _lines(stream):
        try:
            obj = load_json(line)
            yield n, obj, BillingLine.model_validate(obj)
        except DecodeError as exc:
            yield n, line.decode("utf-8", "replace"), f"invalid row: {exc}"
        except ValidationError as exc:
            yield n, line.decode("utf-8", "replace"), f"invalid row: {str(exc).splitlines()[0]}"
