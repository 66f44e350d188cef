"""Dead letters from every path: listed with reasons, fixed ones sent back, counted in metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from services.contracts import DeadLetter, encode_dead_letter
from services.ingest.gateway import credential_id
from services.runtime.kafka import dead_letter, make_producer
from tests.helpers import cli, free_port

RATE = {
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
    "effective_to": "2024-01-01T00:05:00Z",
}


def event(n: int, **over: object) -> dict[str, object]:
    e = {
        "event_id": f"e{n}",
        "tenant_id": "acme",
        "resource_id": "node-1",
        "model": "m",
        "engine": "vllm",
        "started_at": f"2024-01-01T00:0{n}:00Z",
        "finished_at": f"2024-01-01T00:0{n}:30Z",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "status": "ok",
    }
    e.update(over)
    return e


def counted(db_url: str) -> set[str]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        ids = set(conn.execute(text("SELECT event_id FROM counted_events")).scalars())
    engine.dispose()
    return ids


def test_dead_letters_are_listed_fixed_and_replayed(cli_env, settings, tmp_path):
    rates = tmp_path / "rates.jsonl"
    rates.write_text(json.dumps(RATE) + "\n")
    cli(cli_env, "ingest", "rates", str(rates))
    events = tmp_path / "events.jsonl"
    naive = event(2, started_at="2024-01-01T00:02:00", finished_at="2024-01-01T00:02:30")
    events.write_text(
        "\n".join(json.dumps(e) for e in (event(1), naive, event(3, prompt_tokens=-5))) + "\n"
    )
    summary = json.loads(cli(cli_env, "ingest", "events", str(events)).stdout)
    assert summary["published"] == 1 and summary["rejected"] == 2

    topic = settings.topic("inference-events")
    producer = make_producer(settings)
    # straight onto the topic, past every producer-side check: the attribution processor
    # must dead-letter it; and a valid event a gateway refused (a token's scope, since fixed)
    producer.send(topic, key="node-1", value=b'{"event_id": "broken", ')
    producer.send(
        f"{topic}.dlq",
        dead_letter(
            topic,
            "forbidden",
            "token may not write node-1",
            json.dumps(event(4)),
            65536,
            source="gateway",
            credential="cluster-a",
            credential_id=credential_id("tok-a"),
        ),
    )
    big = json.dumps(event(5, model="x" * 400))
    producer.send(
        f"{topic}.dlq", dead_letter(topic, "invalid", "too big", big, 256, source="gateway")
    )
    producer.flush(30)
    producer.close(10)
    cli(cli_env, "run", "all", "--until-idle")
    assert counted(settings.database_url) == {"e1"}

    listed = cli(cli_env, "dlq", "list", "--format", "jsonl")
    assert "ERROR" not in listed.stderr, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["rejected_at"] for r in records] == sorted(
        (r["rejected_at"] for r in records), key=datetime.fromisoformat
    )
    by = {(r["source"], r["reason"]) for r in records}
    assert ("attribution", "invalid_json") in by
    assert ("gateway", "forbidden") in by
    ingest = [r for r in records if r["source"] == "ingest"]
    assert len(ingest) == 2, json.dumps(records, indent=1)
    assert all("line " in r["detail"] for r in ingest)
    assert all(r["topic"] == topic for r in records)
    tally = json.loads(listed.stderr.strip().splitlines()[-1])
    assert tally["dead_letters"] == 5
    table = cli(cli_env, "dlq", "list", "--source", "ingest").stdout
    assert "naive" in table.lower() or "offset" in table.lower(), table
    assert len(table.strip().splitlines()) == 3  # header and the two ingest records
    assert (
        cli(cli_env, "dlq", "list", "--reason", "forbidden", "--format", "jsonl").stdout.count("\n")
        == 1
    )

    # as they are: the gateway's refused event is valid and its token may now write node-1 (the
    # scope was widened), so it goes back; the truncated one and the broken JSON do not
    widened = {**cli_env, "INFERLEDGER_GATEWAY_TOKENS": json.dumps({"tok-a": {"name": "a"}})}
    asis = json.loads(cli(widened, "dlq", "replay", "--source", "gateway").stdout)
    assert asis["sent"] == 1 and asis["skipped_by_reason"] == {"payload_truncated": 1}
    broken = json.loads(cli(cli_env, "dlq", "replay", "--reason", "invalid_json").stdout)
    assert broken["sent"] == 0 and broken["skipped_by_reason"] == {"still_invalid": 1}

    # fixed by hand: the naive timestamps get their Z; the negative tokens stay wrong
    fixed = []
    for r in ingest:
        payload = json.loads(r["payload"])
        if payload["event_id"] == "e2":
            payload["started_at"] += "Z"
            payload["finished_at"] += "Z"
        fixed.append(json.dumps({**r, "payload": payload}))
    fixed_file = tmp_path / "fixed.jsonl"
    fixed_file.write_text("\n".join(fixed) + "\n")
    dry = json.loads(
        cli(cli_env, "dlq", "replay", "--from-file", str(fixed_file), "--dry-run").stdout
    )
    assert dry["sent"] == 1 and dry["dry_run"] is True
    out = cli(cli_env, "dlq", "replay", "--from-file", str(fixed_file))
    assert json.loads(out.stdout)["sent"] == 1
    assert "still_invalid" in out.stderr and "prompt_tokens" in out.stderr

    cli(cli_env, "run", "all", "--until-idle")
    assert counted(settings.database_url) == {"e1", "e2", "e4"}
    cli(cli_env, "audit")


def test_dlq_list_shows_dead_letters_oldest_first_and_logs_no_error(cli_env, settings):
    """Sorted by when they were rejected whatever topic and partition holds them (then by
    topic, partition and offset); a dead letter written before the contract existed is listed
    too; and a clean run prints no ERROR (kafka-python's cancelled metadata refresh)."""
    events, rates = settings.topic("inference-events"), settings.topic("gpu-rates")
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def letter(topic: str, minute: int, reason: str) -> bytes:
        return encode_dead_letter(
            DeadLetter(
                reason=reason,
                detail="d",
                source="test",
                topic=topic,
                payload="{}",
                payload_truncated=False,
                payload_size=2,
                rejected_at=at + timedelta(minutes=minute),
            )
        )

    old_format = (  # as services.runtime.kafka.dead_letter wrote them before the model
        b'{"type": "inferledger.dead_letter.v1", "reason": "old", "detail": "d", "source": '
        b'"test", "topic": "' + events.encode() + b'", "partition": null, "offset": null, '
        b'"payload": "{}", "payload_truncated": false, "payload_size": 2, '
        b'"rejected_at": "2026-01-01T00:02:30+00:00"}'
    )
    producer = make_producer(settings)
    for topic, partition, value in [
        (events, 0, letter(events, 5, "fifth")),  # the newest first in every partition
        (events, 0, letter(events, 1, "first")),
        (events, 3, letter(events, 4, "fourth")),
        (events, 3, letter(events, 2, "second")),
        (rates, 1, letter(rates, 3, "third")),
        (rates, 2, old_format),
        (events, 1, b"not a dead letter"),
    ]:
        producer.send(f"{topic}.dlq", value=value, partition=partition)
    producer.flush(30)
    producer.close(10)

    listed = cli(cli_env, "dlq", "list", "--format", "jsonl")
    assert "ERROR" not in listed.stderr and "Cancelled" not in listed.stderr, listed.stderr
    reasons = [json.loads(line)["reason"] for line in listed.stdout.splitlines()]
    assert reasons == [
        "first",
        "second",
        "old",
        "third",
        "fourth",
        "fifth",
        "unreadable_dead_letter",
    ]
    table = cli(cli_env, "dlq", "list")
    assert "ERROR" not in table.stderr, table.stderr
    rows = table.stdout.strip().splitlines()[1:]
    assert [r[65:87].strip() for r in rows] == reasons  # the reason column


def test_processors_count_dead_letters_in_prometheus_metrics(cli_env, settings):
    port = free_port()
    env = {**cli_env, "INFERLEDGER_METRICS_LISTEN": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "attribution"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        producer = make_producer(settings)
        topic = settings.topic("inference-events")
        producer.send(topic, key="node-1", value=b"\xff\xfe not utf-8")
        producer.send(topic, key="node-1", value=json.dumps(event(1, status="maybe")).encode())
        producer.send(topic, key="node-1", value=json.dumps(event(2)).encode())
        producer.flush(30)
        producer.close(10)
        deadline = time.monotonic() + 90
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                body = ""
            if 'reason="invalid_utf8"' in body and 'counter="events.' in body:
                break
            time.sleep(1)
        assert (
            'inferledger_dead_letters_total{component="attribution",reason="invalid_utf8"} 1.0'
            in body
        ), body
        assert (
            'inferledger_dead_letters_total{component="attribution",reason="invalid_event"} 1.0'
            in body
        )
        assert 'inferledger_processed_total{component="attribution",counter="events.' in body
    finally:
        proc.terminate()
        proc.wait(30)
