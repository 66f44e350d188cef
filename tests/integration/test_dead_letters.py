"""Bad input never stops the processors: it goes to `<topic>.dlq` with the reason, counted."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

from kafka import KafkaProducer

from tests.helpers import cli, ledger, read_topic

GOOD = {
    "event_id": "good-1",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "m",
    "engine": "vllm",
    "started_at": "2024-01-01T00:00:00Z",
    "finished_at": "2024-01-01T00:00:30Z",
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "status": "ok",
}


def bad(**changes):
    event = dict(GOOD, event_id=f"bad-{len(changes)}-{sorted(changes)[0]}")
    event.update(changes)
    return json.dumps(event).encode()


BAD_EVENTS = {
    b"{not json": "invalid_json",
    b"\xff\xfe\x00garbage": "invalid_utf8",
    json.dumps({"type": "inferledger.something_else.v9"}).encode(): "unknown_type",
    bad(started_at="2024-01-01T00:00:00"): "invalid_event",  # naive timestamp
    bad(prompt_tokens=-1): "invalid_event",
    bad(cached_prompt_tokens=11): "invalid_event",  # cached > prompt
    bad(finished_at="2023-12-31T23:59:00Z"): "invalid_event",  # finished before started
    json.dumps([1, 2]).encode(): "invalid_message",
}


def test_bad_messages_go_to_dead_letter_topics_and_good_ones_land(settings, cli_env):
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    events, rates = settings.topic("inference-events"), settings.topic("gpu-rates")
    for raw in BAD_EVENTS:
        producer.send(events, key=b"node-1", value=raw)
    batch = {
        "resource_id": "node-1",
        "events": [
            dict(
                GOOD,
                event_id="good-2",
                started_at="2024-01-01T00:00:40Z",
                finished_at="2024-01-01T00:00:50Z",
            ),
            dict(GOOD, event_id="bad-in-batch", completion_tokens="many"),
        ],
    }
    producer.send(events, key=b"node-1", value=json.dumps(batch).encode())
    producer.send(events, key=b"node-1", value=json.dumps(GOOD).encode())
    float_money = {
        "resource_id": "node-1",
        "price_per_hour": 36.0,
        "currency": "USD",
        "effective_from": "2024-01-01T00:00:00Z",
    }
    producer.send(rates, key=b"node-1", value=json.dumps(float_money).encode())
    good_rate = dict(float_money, price_per_hour="36.00", effective_to="2024-01-01T00:01:00Z")
    producer.send(rates, key=b"node-1", value=json.dumps(good_rate).encode())
    producer.flush()
    producer.close()

    cli(cli_env, "run", "all", "--until-idle")

    dlq = read_topic(settings.kafka_bootstrap, f"{events}.dlq")
    reasons = Counter(d["reason"] for d in dlq)
    expected = Counter(BAD_EVENTS.values())
    expected["invalid_event"] += 1  # the bad event inside the batch
    assert reasons == expected, [(d["reason"], d["detail"]) for d in dlq]
    assert all(d["source"] == "attribution" and d["topic"] == events for d in dlq)
    assert all(d["detail"] for d in dlq)
    naive = [d for d in dlq if "naive" in d["detail"]]
    assert len(naive) == 1 and "started_at" in naive[0]["payload"]
    assert any("cached_prompt_tokens" in d["detail"] for d in dlq)
    assert any("finished_at is before started_at" in d["detail"] for d in dlq)

    rate_dlq = read_topic(settings.kafka_bootstrap, f"{rates}.dlq")
    assert [d["reason"] for d in rate_dlq] == ["invalid_rate"]
    assert "decimal string" in rate_dlq[0]["detail"]

    rows = ledger(settings.database_url).values()
    assert sum(c for _, _, _, _, c in rows) == 2  # good-1 and good-2
    assert sum(a for _, _, _, a, _ in rows) == Decimal("0.6")
    assert "audit passed" in cli(cli_env, "audit").stdout


def test_ingest_rejects_bad_lines_to_the_dead_letter_topic(settings, cli_env, tmp_path):
    path = tmp_path / "events.jsonl"
    marker = json.dumps(
        {"type": "inferledger.control.end_of_input.v1", "run_id": "r", "at": "2099-01-01T00:00:00Z"}
    ).encode()
    lines = [json.dumps(GOOD).encode(), b"{oops", bad(status="meh"), marker]
    path.write_bytes(b"\n".join(lines))
    summary = json.loads(cli(cli_env, "ingest", "events", str(path)).stdout)
    assert summary["read"] == 4 and summary["published"] == 1
    assert summary["rejected_by_reason"] == {
        "invalid_json": 1,
        "invalid_event": 1,
        "control_message": 1,  # a file cannot inject control markers (nor move the watermark)
    }
    dlq = read_topic(settings.kafka_bootstrap, settings.topic("inference-events.dlq"))
    assert sorted(d["reason"] for d in dlq) == ["control_message", "invalid_event", "invalid_json"]
    assert all(d["source"] == "ingest" for d in dlq)
