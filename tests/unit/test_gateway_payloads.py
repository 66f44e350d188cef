"""The gateway's request bodies parsed and judged without HTTP (services.ingest.payloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.contracts import GpuRate, InferenceEvent
from services.contracts.wire import DecodeError
from services.ingest import payloads
from services.ingest.payloads import CE_BATCH, CE_ONE, CE_TYPE, parse
from tests.helpers import gateway_event

DATA = Path(__file__).resolve().parents[1] / "data"


def anyone(resource_id: str | None, tenant_id: str | None) -> str | None:
    return None


def judged(body: bytes | str, ctype: str, kind: str = "events", forbids=anyone):
    raw = body.encode() if isinstance(body, str) else body
    items = parse(raw, ctype, kind)
    payloads.validate(items, InferenceEvent if kind == "events" else GpuRate, forbids)
    return items


def refused(body: bytes | str, ctype: str, kind: str = "events") -> DecodeError:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(DecodeError) as info:
        parse(raw, ctype, kind, max_bytes=1024)
    return info.value


def test_json_one_event_an_array_and_a_batch_envelope():
    assert [i.accepted for i in judged(json.dumps(gateway_event("a")), "application/json")] == [
        True
    ]
    items = judged(
        json.dumps([gateway_event("a"), gateway_event("b", prompt_tokens=-1)]), "application/json"
    )
    assert [(i.index, i.reason) for i in items] == [(0, None), (1, "invalid_event")]
    batch = {
        "type": "inferledger.inference_event_batch.v1",
        "resource_id": "node-1",
        "events": [gateway_event("a"), gateway_event("b", resource_id="node-2")],
    }
    items = judged(json.dumps(batch), "application/json")
    assert [i.reason for i in items] == [None, "invalid_event"]
    assert "differs from batch" in (items[1].detail or "")
    assert refused(json.dumps(dict(batch, events={})), "application/json").reason == (
        "invalid_batch"
    )


@pytest.mark.parametrize(
    "ctype", ["application/x-ndjson", "application/jsonl", "application/x-jsonlines"]
)
def test_ndjson_lines_are_items_and_a_bad_line_is_rejected_alone(ctype):
    body = json.dumps(gateway_event("a")) + "\n\n{not json\n" + json.dumps(gateway_event("b"))
    items = judged(body, ctype)
    assert [(i.index, i.reason) for i in items] == [(0, None), (2, "invalid_json"), (3, None)]
    assert items[1].detail and items[1].detail.startswith("line 3:")
    assert payloads.rejections(items) == [("invalid_json", items[1].detail, "{not json")]
    assert refused(b"\xff\xfe", ctype).reason == "invalid_utf8"


def test_cloudevents_one_and_a_batch():
    ce = {
        "specversion": "1.0",
        "type": CE_TYPE,
        "source": "/a",
        "id": "1",
        "data": gateway_event("a"),
    }
    (one,) = judged(json.dumps(ce), CE_ONE)
    assert one.accepted and one.id == "/a\x1f1" and one.payload == gateway_event("a")
    batch = [
        ce,
        dict(ce, id="2", type="com.example.other"),
        dict(ce, id="3", specversion="0.3"),
        {"specversion": "1.0"},
        dict(ce, id="4", data="text"),
        7,
    ]
    reasons = [i.reason for i in judged(json.dumps(batch), CE_BATCH)]
    assert reasons == [
        None,
        "unknown_type",
        "invalid_cloudevent",
        "invalid_cloudevent",
        "invalid_cloudevent",
        "invalid_cloudevent",
    ]
    assert refused(json.dumps(ce), CE_BATCH).reason == "invalid_cloudevents"
    # CloudEvents carry events only
    assert refused(json.dumps(ce), CE_ONE, kind="rates").reason == "unsupported_media_type"


@pytest.mark.parametrize(
    "ctype", ["text/plain", "text/csv", "application/octet-stream", "application/xml", ""]
)
def test_anything_but_json_or_ndjson_is_415(ctype):
    err = refused(json.dumps(gateway_event("a")), ctype)
    assert err.reason == "unsupported_media_type" and payloads.status_of(err) == 415
    assert "application/json" in err.detail


def test_whole_body_refusals_and_their_statuses():
    assert payloads.status_of(refused(b"{not json", "application/json")) == 400
    assert refused(b'{"a": "\xff"}', "application/json").reason == "invalid_utf8"
    big = refused(b"x" * 2000, "application/json")
    assert big.reason == "body_too_large" and payloads.status_of(big) == 413
    assert big.detail == "body over the 1024-byte limit"
    assert payloads.too_large(10, "read 11").detail == "body over the 10-byte limit: read 11"


def test_validation_applies_the_grant_and_answer_sums_up():
    def node2_only(resource_id: str | None, tenant_id: str | None) -> str | None:
        return None if resource_id == "node-2" else f"may not write {resource_id}"

    body = json.dumps([gateway_event("ok", resource_id="node-2"), gateway_event("no")])
    items = judged(body, "application/json", forbids=node2_only)
    status, answer = payloads.answer(items)
    assert status == 207 and answer["accepted"] == 1
    assert answer["rejected"] == [
        {"index": 1, "id": None, "reason": "forbidden", "detail": "may not write node-1"}
    ]
    assert payloads.answer(items[1:])[0] == 403
    assert (
        payloads.answer(
            judged(json.dumps([gateway_event("x", prompt_tokens=-1)]), "application/json")
        )[0]
        == 400
    )
    assert payloads.answer(items[:1], duplicates=1) == (
        200,
        {"accepted": 1, "duplicates": 1, "rejected": []},
    )


def test_rates_take_json_and_ndjson():
    line = (DATA / "worked_example_rates.jsonl").read_text().splitlines()[0]
    assert [i.accepted for i in judged(line, "application/json", kind="rates")] == [True]
    items = judged(line + "\n{}", "application/x-ndjson", kind="rates")
    assert [i.reason for i in items] == [None, "invalid_rate"]
