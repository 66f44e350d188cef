"""One batch envelope for every producer (contracts.encode_event_batch): it decodes on the hot
path and through the full decoder, and it has exactly the schema's fields."""

from __future__ import annotations

import json

import pytest

from bench.workload import Workload, encode_batches
from services.contracts import InferenceEvent, decode_events, dumps, encode_event_batch
from services.contracts.fast import event_records
from services.contracts.schemas import SCHEMAS
from services.contracts.wire import BATCH_SEPARATOR, BATCH_TYPE
from services.ingest.files import batch_events
from tests.helpers import SAMPLE_EVENT

SCHEMA = json.loads((SCHEMAS / "inference_event_batch.v1.json").read_text())


def events(n: int, resource: str = "node-1") -> list[InferenceEvent]:
    return [
        InferenceEvent.model_validate(
            {**SAMPLE_EVENT, "event_id": f"e{i}", "resource_id": resource}
        )
        for i in range(n)
    ]


def check(raw: bytes, expected: list[InferenceEvent]) -> None:
    """Decodes on both paths to ``expected``, and its fields are the schema's."""
    fast = event_records(raw)
    assert fast is not None, raw
    assert [e.event_id for e in fast] == [e.event_id for e in expected]
    assert decode_events(raw).events == expected
    doc = json.loads(raw)
    assert set(doc) <= set(SCHEMA["properties"]) and set(SCHEMA["required"]) <= set(doc)
    assert doc["type"] == SCHEMA["properties"]["type"]["const"] == BATCH_TYPE
    assert len(doc["events"]) >= SCHEMA["properties"]["events"]["minItems"]


@pytest.mark.parametrize("resource", ["node-1", 'n\u00f6de "7"'])
def test_a_batch_decodes_on_the_hot_path_and_has_the_schemas_fields(resource):
    evs = events(3, resource)
    raw = encode_event_batch(resource, [dumps(e) for e in evs])
    check(raw, evs)
    assert encode_event_batch(resource, evs) == raw  # models are encoded the same way
    # the size a producer accounts for is the events and a separator each, plus the envelope
    envelope = len(encode_event_batch(resource, [b"{}"])) - 2
    assert len(raw) == envelope + sum(len(dumps(e)) + BATCH_SEPARATOR for e in evs) - 1


def test_file_ingest_batches_are_the_encoders():
    evs = events(5)
    out = list(batch_events(evs, max_events=2, max_bytes=1_000_000))
    assert [n for _, _, n in out] == [2, 2, 1]
    for (resource, raw, _), chunk in zip(out, (evs[:2], evs[2:4], evs[4:]), strict=True):
        assert raw == encode_event_batch(resource, chunk)
        check(raw, chunk)


def test_the_bench_workloads_batches_are_the_encoders():
    work = Workload(events=40, resources=2)
    for resource, raw, n in encode_batches(work.generate(), per_message=8):
        doc = json.loads(raw)
        assert doc["resource_id"] == resource and len(doc["events"]) == n
        items = [json.dumps(e, separators=(",", ":")).encode() for e in doc["events"]]
        assert raw == encode_event_batch(resource, items)
        check(raw, decode_events(raw).events)
