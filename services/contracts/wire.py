"""Encoding and decoding of wire messages, with a clear reason for everything rejected."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.contracts.models import (
    BillingLine,
    CostAllocation,
    EndOfInput,
    GpuRate,
    InferenceEvent,
    InferenceEventBatch,
)

M = TypeVar("M", bound=BaseModel)

_EVENT = "inferledger.inference_event.v1"
_BATCH = "inferledger.inference_event_batch.v1"
_RATE = "inferledger.gpu_rate.v1"
_ALLOCATION = "inferledger.cost_allocation.v1"
_BILLING = "inferledger.billing_line.v1"
_EOI = "inferledger.control.end_of_input.v1"


class DecodeError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


def explain(exc: ValidationError) -> str:
    """A validation error as one line: ``field: message; field: message``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_json(raw: bytes | str) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid_utf8", str(exc)) from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from None


def _type_of(obj: Any, default: str) -> str:
    if not isinstance(obj, dict):
        raise DecodeError("invalid_message", f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type", default)
    if not isinstance(kind, str):
        raise DecodeError("unknown_type", f"message type {kind!r} is not a string")
    return kind


def decode_events(raw: bytes | str) -> DecodedEvents:
    """Decode an ``inference-events`` message: an event, a batch, or an end-of-input marker.

    A whole message that cannot be read raises :class:`DecodeError`. In a batch, each invalid
    event is rejected on its own and the valid ones are kept.
    """
    out = DecodedEvents()
    if isinstance(raw, bytes):
        # fast paths: parse and validate in one pass (pydantic-core), a batch or one event;
        # the slow path below says exactly what is wrong (event by event in a batch)
        try:
            if b'"events"' in raw:
                out.events.extend(InferenceEventBatch.model_validate_json(raw).events)
            else:
                out.events.append(InferenceEvent.model_validate_json(raw))
            return out
        except ValidationError:
            pass
    obj = load_json(raw)
    kind = _type_of(obj, _BATCH if isinstance(obj, dict) and "events" in obj else _EVENT)
    if kind == _EVENT:
        try:
            out.events.append(InferenceEvent.model_validate(obj))
        except ValidationError as exc:
            raise DecodeError("invalid_event", explain(exc)) from None
    elif kind == _BATCH:
        try:
            out.events.extend(InferenceEventBatch.model_validate(obj).events)
        except ValidationError as exc:
            items = obj.get("events")
            if not isinstance(items, list) or not isinstance(obj.get("resource_id"), str):
                raise DecodeError("invalid_batch", explain(exc)) from None
            resource = obj["resource_id"]
            for item in items:
                try:
                    event = InferenceEvent.model_validate(item)
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
    raw: bytes | str, model: type[M], default: str, reason: str, topic: str
) -> M | EndOfInput:
    try:  # fast path: one pass in pydantic-core; the slow path explains failures
        return model.model_validate_json(raw)
    except ValidationError:
        pass
    obj = load_json(raw)
    kind = _type_of(obj, default)
    if kind == default:
        return _validate(model, obj, reason)
    if kind == _EOI:
        return _validate(EndOfInput, obj, "invalid_control")
    raise DecodeError("unknown_type", f"unknown message type {kind!r} on {topic}")


def decode_rate(raw: bytes | str) -> GpuRate | EndOfInput:
    return _decode_one(raw, GpuRate, _RATE, "invalid_rate", "gpu-rates")


def decode_allocation(raw: bytes | str) -> CostAllocation | EndOfInput:
    return _decode_one(raw, CostAllocation, _ALLOCATION, "invalid_allocation", "cost-allocations")


def decode_billing(raw: bytes | str) -> BillingLine | EndOfInput:
    return _decode_one(raw, BillingLine, _BILLING, "invalid_billing_line", "gpu-billing")
