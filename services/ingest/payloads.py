"""Request bodies of the HTTP gateway, parsed and judged without HTTP (no aiohttp here).

A body becomes :class:`Item` s, each validated on its own; what is wrong with a whole body (its
content type, its size, undecodable JSON) raises :class:`DecodeError` with the reason the
answer and the dead letter carry. :func:`answer` turns the items' fates into the status and
the JSON answer, and :func:`rejections` into dead letters.

Accepted content types: ``application/json`` (one item, an array, or for events a batch
envelope), NDJSON (``application/x-ndjson``, or its aliases ``application/jsonl`` and
``application/x-jsonlines``) and, for events, ``application/cloudevents+json`` and
``application/cloudevents-batch+json``. Anything else is 415 ``unsupported_media_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from services.contracts import BillingLine, GpuRate, InferenceEvent
from services.contracts.wire import DecodeError, explain, load_json

CE_TYPE = "inferledger.inference_event.v1"
BATCH_TYPE = "inferledger.inference_event_batch.v1"
JSON = "application/json"
NDJSON = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
CE_ONE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
INVALID: dict[type[BaseModel], str] = {
    InferenceEvent: "invalid_event",
    GpuRate: "invalid_rate",
    BillingLine: "invalid_billing_line",
}
UNSUPPORTED = "unsupported_media_type"

Forbids = Callable[[str | None, str | None], str | None]
"""``(resource_id, tenant_id) -> why the sender may not write it`` (None: it may)."""


@dataclass
class Item:
    """One item of a request: its position, its id if it has one, and its fate."""

    index: int
    payload: Any
    id: str | None = None
    model: BaseModel | None = None
    reason: str | None = None
    detail: str | None = None

    def reject(self, reason: str, detail: str) -> None:
        self.reason, self.detail, self.model = reason, detail, None

    @property
    def accepted(self) -> bool:
        return self.model is not None and self.reason is None


def too_large(limit: int, detail: str = "") -> DecodeError:
    """The whole-body refusal of a body over ``limit`` bytes (413)."""
    text = f"body over the {limit}-byte limit"
    return DecodeError("body_too_large", f"{text}: {detail}" if detail else text)


def status_of(error: DecodeError) -> int:
    """The HTTP status of a whole-body refusal."""
    return {UNSUPPORTED: 415, "body_too_large": 413}.get(error.reason, 400)


def parse(body: bytes, content_type: str, kind: str, max_bytes: int | None = None) -> list[Item]:
    """The items of a body of ``kind`` (events, rates or billing), not yet validated.

    Raises :class:`DecodeError` when the body as a whole is refused; an NDJSON line that is
    not JSON is an item rejected on its own (the other lines still count)."""
    if max_bytes is not None and len(body) > max_bytes:
        raise too_large(max_bytes)
    if content_type in NDJSON:
        return _ndjson(body)
    if content_type == JSON:
        doc = load_json(body)
        if isinstance(doc, dict) and kind == "events" and doc.get("type") == BATCH_TYPE:
            return _batch(doc)
        docs = doc if isinstance(doc, list) else [doc]
        return [Item(n, d) for n, d in enumerate(docs)]
    if kind == "events" and content_type in (CE_ONE, CE_BATCH):
        doc = load_json(body)
        if content_type == CE_BATCH and not isinstance(doc, list):
            raise DecodeError("invalid_cloudevents", "a batch must be a JSON array")
        docs = doc if isinstance(doc, list) else [doc]
        return [_cloudevent(n, d) for n, d in enumerate(docs)]
    usable = "application/json, application/x-ndjson"
    if kind == "events":
        usable += f", {CE_ONE} or {CE_BATCH}"
    raise DecodeError(UNSUPPORTED, f"content type {content_type!r} (use {usable})")


def _ndjson(body: bytes) -> list[Item]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", str(exc)) from None
    items = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            items.append(Item(n, load_json(line)))
        except DecodeError as exc:
            item = Item(n, line)
            item.reject(exc.reason, f"line {n + 1}: {exc.detail}")
            items.append(item)
    return items


def _batch(doc: dict[str, Any]) -> list[Item]:
    events = doc.get("events")
    if not isinstance(events, list):
        raise DecodeError("invalid_batch", "events must be a JSON array")
    items = []
    batch_resource = doc.get("resource_id")
    for n, e in enumerate(events):
        item = Item(n, e)
        if isinstance(e, dict) and e.get("resource_id") != batch_resource:
            item.reject("invalid_event", f"resource_id differs from batch {batch_resource!r}")
        items.append(item)
    return items


def _cloudevent(n: int, doc: Any) -> Item:
    item = Item(n, doc)
    if not isinstance(doc, dict):
        item.reject("invalid_cloudevent", "a CloudEvent must be a JSON object")
        return item
    missing = [k for k in ("specversion", "id", "source", "type") if not doc.get(k)]
    if missing:
        item.reject("invalid_cloudevent", f"missing CloudEvents attributes: {missing}")
        return item
    item.id = f"{doc['source']}\x1f{doc['id']}"
    if doc["specversion"] != "1.0":
        item.reject("invalid_cloudevent", f"specversion {doc['specversion']!r} (use 1.0)")
    elif doc["type"] != CE_TYPE:
        item.reject("unknown_type", f"CloudEvents type {doc['type']!r} (use {CE_TYPE})")
    elif not isinstance(doc.get("data"), dict):
        item.reject("invalid_cloudevent", "data must be the inference event as JSON")
    else:
        item.payload = doc["data"]
    return item


def validate(items: list[Item], model: type[BaseModel], forbids: Forbids) -> None:
    """Validate every item not yet rejected against ``model`` and the sender's grant."""
    for item in items:
        if item.reason is not None:
            continue
        try:
            obj = model.model_validate(item.payload)
        except ValidationError as exc:
            item.reject(INVALID[model], explain(exc))
            continue
        denied = forbids(getattr(obj, "resource_id", None), getattr(obj, "tenant_id", None))
        if denied:
            item.reject("forbidden", denied)
            continue
        item.model = obj


def rejections(items: list[Item]) -> list[tuple[str, str, Any]]:
    """``(reason, detail, payload)`` of every rejected item: what goes to dead letters."""
    return [(i.reason, i.detail or "", i.payload) for i in items if i.reason is not None]


def answer(items: list[Item], duplicates: int = 0) -> tuple[int, dict[str, Any]]:
    """Status and answer of a request whose accepted items were all published: 200 all
    accepted, 207 some, 400 none (403 when every item was forbidden)."""
    accepted = sum(1 for i in items if i.accepted)
    rejected = [i for i in items if i.reason is not None]
    body = {
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": [
            {"index": i.index, "id": i.id, "reason": i.reason, "detail": i.detail} for i in rejected
        ],
    }
    if not rejected:
        return 200, body
    if accepted:
        return 207, body
    return (403 if all(i.reason == "forbidden" for i in rejected) else 400), body
