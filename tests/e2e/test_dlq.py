"""Dead letters from every path: listed with reasons, fixed ones sent back, counted in metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from sqlalchemy import create_engine, text

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
    records = [json.loads(line) for line in listed.stdout.splitlines()]
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
