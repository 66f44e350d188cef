"""Defect 10: the proxy's event id is its own, unique per request, whatever the upstream's
response id is; the upstream's id is kept as ``request_id`` when it is a usable id."""

from __future__ import annotations

import uuid

from services.contracts import InferenceEvent
from services.ingest.proxy import Metered, Upstream, new_event_id


def test_event_ids_are_unique_uuid7s() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:100])
    assert ids[0][:8] <= ids[-1][:8]  # time-ordered (milliseconds lead)


def test_a_repeated_or_empty_upstream_id_never_makes_two_requests_one_event() -> None:
    node = Upstream("gpu-node-1", "http://127.0.0.1:1")
    for response_id in ("cmpl-same", "", None, "x" * 500, "bad\x00id"):
        events = []
        for tenant in ("acme", "beta", "acme"):
            meter = Metered(tenant, node, "llama-70b", response_id=response_id)
            meter.usage = {"prompt_tokens": 5, "completion_tokens": 2}
            events.append(InferenceEvent.model_validate(meter.event()))
        assert len({e.event_id for e in events}) == 3, response_id
        expected = response_id if response_id == "cmpl-same" else None
        assert {e.request_id for e in events} == {expected}


def test_the_event_id_is_fixed_for_one_request() -> None:
    meter = Metered("acme", Upstream("n", "http://127.0.0.1:1"), "m")
    assert meter.event()["event_id"] == meter.event()["event_id"]
