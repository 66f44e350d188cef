"""Encoding and decoding of wire messages, with a clear reason for everything rejected.

Every decoder either returns a valid message (inside every limit of DESIGN.md section 2, see
:mod:`services.contracts.models`) or raises :class:`DecodeError` with a machine-readable
``reason``; nothing else, whatever the bytes (a fuzz test holds them to it). Reasons:
``invalid_utf8``, ``invalid_json`` (malformed, empty, NaN/Infinity literals, lone surrogate
escapes, numbers past 4,300 digits, or nested too deeply), ``invalid_message`` (not an object),
``unknown_type``, ``invalid_event``, ``invalid_batch``, ``invalid_rate``, ``invalid_billing_line``,
``invalid_allocation``, ``invalid_price``, ``invalid_control``, ``invalid_dead_letter``, and
``tombstone``: a Kafka
message whose value is None raises :class:`Tombstone` (a ``DecodeError``) so that a caller can
count and skip it, never dead-letter it (check :func:`is_tombstone` first, or catch
``Tombstone`` before ``DecodeError``).

A far-future event is not the decoder's to judge (it needs the processor's wall clock): see
:func:`too_far_in_future` and :func:`check_clock`, reason ``future_event``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from services.contracts.fast import EventRecord, to_builtins
from services.contracts.models import (
    MAX_FUTURE_SECONDS,
    NO_CONTROL,
    NO_NUL,
    BillingLine,
    CostAllocation,
    DeadLetter,
    EndOfInput,
    GpuRate,
    InferenceEvent,
    InferenceEventBatch,
    Limits,
    Price,
)

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", InferenceEvent, EventRecord)

TOMBSTONE = "tombstone"
"""Reason of :class:`Tombstone`: counted and skipped on every topic, never dead-lettered."""
FUTURE_EVENT = "future_event"
"""Reason of an event whose ``finished_at`` is too far after the processor's wall clock."""

_EVENT = "inferledger.inference_event.v1"
_BATCH = "inferledger.inference_event_batch.v1"
_RATE = "inferledger.gpu_rate.v1"
_ALLOCATION = "inferledger.cost_allocation.v1"
_BILLING = "inferledger.billing_line.v1"
_PRICE = "inferledger.price.v1"
_EOI = "inferledger.control.end_of_input.v1"


class DecodeError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Tombstone(DecodeError):
    """A message with a null value (a tombstone): it carries no message. Count it and skip it
    (DESIGN.md section 2); it is not an invalid message and is never dead-lettered."""

    def __init__(self) -> None:
        super().__init__(TOMBSTONE, "the message value is null (a tombstone)")


def is_tombstone(raw: object) -> bool:
    """Whether a Kafka message value is a tombstone (None): count it and skip it."""
    return raw is None


@dataclass
class Rejected:
    """One rejected part of a message (a whole message, or one event of a batch)."""

    reason: str
    detail: str
    payload: Any


@dataclass
class DecodedEvents:
    events: list[InferenceEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    end_of_input: EndOfInput | None = None


def dumps(model: BaseModel) -> bytes:
    """Serialise a contract model to its wire form (money as strings, UTC timestamps)."""
    return model.model_dump_json(exclude_none=True).encode()


BATCH_TYPE: str = InferenceEventBatch.model_fields["type"].default
_BATCH_HEAD = b'{"type":' + json.dumps(BATCH_TYPE).encode() + b',"resource_id":'


def encode_event_batch(resource_id: str, events: Iterable[bytes | InferenceEvent]) -> bytes:
    """One ``inference_event_batch.v1`` message of ``resource_id``, compact JSON, around events
    already encoded (``dumps(event)``, or any JSON object of an event) or event models.

    Every producer builds its batches here (the emitter, file ingest, the gateway, the bench),
    so the envelope has one form; the caller groups events per resource and keeps the batch
    under the size limit: each event adds its length and one comma (:data:`BATCH_SEPARATOR`)."""
    items = [e if isinstance(e, bytes) else dumps(e) for e in events]
    return (
        _BATCH_HEAD + json.dumps(resource_id).encode() + b',"events":[' + b",".join(items) + b"]}"
    )


BATCH_SEPARATOR = 1
"""Bytes :func:`encode_event_batch` adds per event besides the event itself (the comma)."""


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """A dead letter's wire form: every field, ``partition`` and ``offset`` as null when unknown
    (as dead letters always were), ``credential`` and ``credential_id`` only when it names one."""
    exclude = None if letter.credential_id is not None else {"credential", "credential_id"}
    return letter.model_dump_json(exclude=exclude).encode()


def decode_dead_letter(raw: bytes | str | None) -> DeadLetter:
    """A record of a ``.dlq`` topic, validated; :class:`DecodeError` (``invalid_dead_letter``,
    or ``invalid_json``/``invalid_utf8``) when it is not one."""
    if raw is None:
        raise Tombstone()
    try:
        return DeadLetter.model_validate_json(raw)
    except (ValidationError, RecursionError):
        pass
    return _validate(DeadLetter, load_json(raw), "invalid_dead_letter")


def explain(exc: ValidationError) -> str:
    """A validation error as one line: ``field: message; field: message``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        msg = err["msg"]
        if err["type"] == "string_pattern_mismatch":
            pattern = (err.get("ctx") or {}).get("pattern")
            if pattern == NO_CONTROL:
                msg = "contains a control character (U+0000..U+001F or U+007F..U+009F)"
            elif pattern == NO_NUL:
                msg = "contains a NUL character"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def load_json(raw: bytes | str | None) -> Any:
    """Parse one JSON document strictly (RFC 8259): no NaN or Infinity, no lone surrogate
    escape, at most a few hundred levels of nesting (pydantic-core's parser, which never
    recurses in Python, so a deep document is a clean ``invalid_json``, not a RecursionError).
    None (a tombstone) raises :class:`Tombstone`."""
    if raw is None:
        raise Tombstone()
    if isinstance(raw, str):
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError("invalid_utf8", str(exc)) from None
    else:
        data = bytes(raw)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid_utf8", str(exc)) from None
    try:
        return from_json(data, allow_inf_nan=False)
    except RecursionError:
        raise DecodeError("invalid_json", "nested too deeply") from None
    except ValueError as exc:
        raise DecodeError("invalid_json", str(exc)) from None


def _type_of(obj: Any, default: str) -> str:
    if not isinstance(obj, dict):
        raise DecodeError("invalid_message", f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type", default)
    if not isinstance(kind, str):
        raise DecodeError("unknown_type", f"message type {kind!r} is not a string")
    return kind


def decode_events(raw: bytes | str | None, limits: Limits | None = None) -> DecodedEvents:
    """Decode an ``inference-events`` message: an event, a batch, or an end-of-input marker.

    A whole message that cannot be read raises :class:`DecodeError` (:class:`Tombstone` for
    None). In a batch, each invalid event is rejected on its own and the valid ones are kept.
    ``limits`` (default :data:`~services.contracts.models.DEFAULT_LIMITS`) sets the longest
    request; build it with ``Limits.from_settings(settings)``.
    """
    if raw is None:
        raise Tombstone()
    out = DecodedEvents()
    context = None if limits is None else {"limits": limits}
    if isinstance(raw, bytes):
        # fast paths: parse and validate in one pass (pydantic-core), a batch or one event;
        # the slow path below says exactly what is wrong (event by event in a batch)
        try:
            if b'"events"' in raw:
                batch = InferenceEventBatch.model_validate_json(raw, context=context)
                out.events.extend(batch.events)
            else:
                out.events.append(InferenceEvent.model_validate_json(raw, context=context))
            return out
        except (ValidationError, RecursionError):
            pass
    obj = load_json(raw)
    kind = _type_of(obj, _BATCH if isinstance(obj, dict) and "events" in obj else _EVENT)
    if kind == _EVENT:
        try:
            out.events.append(InferenceEvent.model_validate(obj, context=context))
        except ValidationError as exc:
            raise DecodeError("invalid_event", explain(exc)) from None
    elif kind == _BATCH:
        try:
            out.events.extend(InferenceEventBatch.model_validate(obj, context=context).events)
        except ValidationError as exc:
            items = obj.get("events")
            if not isinstance(items, list) or not isinstance(obj.get("resource_id"), str):
                raise DecodeError("invalid_batch", explain(exc)) from None
            resource = obj["resource_id"]
            for item in items:
                try:
                    event = InferenceEvent.model_validate(item, context=context)
                except ValidationError as item_exc:
                    out.rejected.append(Rejected("invalid_event", explain(item_exc), item))
                    continue
                if event.resource_id != resource:
                    out.rejected.append(
                        Rejected(
                            "invalid_event", f"resource_id differs from batch {resource!r}", item
                        )
                    )
                    continue
                out.events.append(event)
    elif kind == _EOI:
        out.end_of_input = _validate(EndOfInput, obj, "invalid_control")
    else:
        raise DecodeError("unknown_type", f"unknown message type {kind!r} on inference-events")
    return out


def _validate(model: type[M], obj: Any, reason: str) -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError(reason, explain(exc)) from None


def _decode_one(
    raw: bytes | str | None, model: type[M], default: str, reason: str, topic: str
) -> M | EndOfInput:
    if raw is None:
        raise Tombstone()
    try:  # fast path: one pass in pydantic-core; the slow path explains failures
        return model.model_validate_json(raw)
    except (ValidationError, RecursionError):
        pass
    obj = load_json(raw)
    kind = _type_of(obj, default)
    if kind == default:
        return _validate(model, obj, reason)
    if kind == _EOI:
        return _validate(EndOfInput, obj, "invalid_control")
    raise DecodeError("unknown_type", f"unknown message type {kind!r} on {topic}")


def decode_rate(raw: bytes | str | None) -> GpuRate | EndOfInput:
    return _decode_one(raw, GpuRate, _RATE, "invalid_rate", "gpu-rates")


def decode_price(raw: bytes | str | None) -> Price | EndOfInput:
    return _decode_one(raw, Price, _PRICE, "invalid_price", "prices")


def decode_allocation(raw: bytes | str | None) -> CostAllocation | EndOfInput:
    return _decode_one(raw, CostAllocation, _ALLOCATION, "invalid_allocation", "cost-allocations")


def decode_billing(raw: bytes | str | None) -> BillingLine | EndOfInput:
    return _decode_one(raw, BillingLine, _BILLING, "invalid_billing_line", "gpu-billing")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def too_far_in_future(
    finished_at: datetime | int,
    now: datetime | float,
    max_future_seconds: float = MAX_FUTURE_SECONDS,
) -> bool:
    """Whether ``finished_at`` is more than ``max_future_seconds`` after ``now``.

    ``finished_at``: an aware datetime, or an int of microseconds since the Unix epoch (as
    ``services.accounting.to_us`` gives). ``now``: the processor's *wall* clock, an aware
    datetime or Unix seconds (``time.time()``; never ``time.monotonic()``).
    """
    end_us = finished_at if isinstance(finished_at, int) else (finished_at - _EPOCH) // _ONE_US
    now_us = (now - _EPOCH) // _ONE_US if isinstance(now, datetime) else round(now * 1e6)
    return end_us - now_us > max_future_seconds * 1_000_000


def check_clock(
    events: Sequence[E], now: datetime | float, max_future_seconds: float = MAX_FUTURE_SECONDS
) -> tuple[list[E], list[Rejected]]:
    """Split decoded events (models or fast-path records) into those the processor may account
    and those finishing more than ``max_future_seconds`` after its wall clock ``now`` (see
    :func:`too_far_in_future`), rejected with reason ``future_event`` and the event as payload."""
    clock = now if isinstance(now, datetime) else _EPOCH + timedelta(seconds=now)
    limit = clock + timedelta(seconds=max_future_seconds)
    if all(e.finished_at <= limit for e in events):  # the common case (per message): no copy
        return list(events), []
    ok: list[E] = []
    rejected: list[Rejected] = []
    for event in events:
        if event.finished_at <= limit:
            ok.append(event)
            continue
        ahead = (event.finished_at - clock).total_seconds()
        payload = (
            to_builtins(event)
            if isinstance(event, EventRecord)
            else event.model_dump(mode="json", exclude_none=True)
        )
        rejected.append(
            Rejected(
                FUTURE_EVENT,
                f"finished_at {event.finished_at.isoformat()} is {ahead:.0f} s after the "
                f"processor's clock (limit {max_future_seconds:g} s)",
                payload,
            )
        )
    return ok, rejected
