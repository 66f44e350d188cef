"""The processors' /metrics, scraped from a real streaming run (`run all` with
INFERLEDGER_METRICS_LISTEN): consumer lag, watermarks, closed buckets, the event-to-ledger
latency histogram, entries written, dead letters by reason and health, each with a value that
matches what the run did (docs/operations.md, "Watching it: Prometheus and Grafana")."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from services.runtime.kafka import make_producer
from tests.helpers import cli, start_cli, stop_cli, wait_for

DATA = Path(__file__).resolve().parents[1] / "data"
LATER = {  # finishes in the closed bucket [60, 120): a late event, an adjustment
    "event_id": "r-later",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "llama-8b",
    "engine": "vllm",
    "started_at": "2024-01-01T00:01:30Z",
    "finished_at": "2024-01-01T00:01:35Z",
    "prompt_tokens": 10,
    "completion_tokens": 1,
    "status": "ok",
}


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free (run all takes consecutive ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        try:
            for k in range(1, n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", base + k))
        except OSError:
            continue
        return base
    raise AssertionError("no consecutive free ports")


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of one /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(page: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for lab, v in page.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, page.get(name))
    return found[0]


def test_processors_export_lag_watermarks_latency_entries_dead_letters_and_health(
    cli_env, settings
):
    cli(cli_env, "migrate")
    port = free_ports(3)  # attribution, ledger, alerts
    env = {**cli_env, "INFERLEDGER_METRICS_LISTEN": f"127.0.0.1:{port}"}
    streaming = start_cli(env, "run", "all")
    try:
        cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
        cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
        cli(cli_env, "run", "all", "--until-idle", "--follow", "--timeout", "120")
        cli(cli_env, "ingest", "events", "-", stdin=json.dumps(LATER).encode())
        producer = make_producer(settings)  # one message that is not JSON: a dead letter
        producer.send(settings.topic("inference-events"), key=b"node-1", value=b"{not json")
        producer.flush(30)
        producer.close(10)
        cli(cli_env, "run", "all", "--until-idle", "--follow", "--timeout", "120")

        def written() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            page = scrape(port + 1)
            rows = page.get("inferledger_ledger_entries_written_total", [])
            return page if rows and rows[0][1] >= 7 else None

        ledger = wait_for(written, 60, "the ledger writer's metrics")
        attribution = scrape(port)
        alerts = scrape(port + 2)
    finally:
        out = stop_cli(streaming)
    assert streaming.returncode == 0, out

    # the attribution processor
    events = settings.topic("inference-events")
    marks = [v for lab, v in attribution["inferledger_watermark_seconds"]
             if lab["topic"] == events]  # fmt: skip
    assert marks and max(marks) >= 1704067200  # 2024-01-01, moved on by the heartbeats
    assert value(attribution, "inferledger_closed_through_seconds") >= 1704067200 + 120
    closed = value(attribution, "inferledger_buckets_closed_total", decision="close")
    assert closed == 2  # the worked example's two buckets
    assert value(attribution, "inferledger_buckets_closed_total", decision="adjustment") >= 1
    assert value(attribution, "inferledger_dead_letters_total", reason="invalid_json") == 1
    lag = [(lab, v) for lab, v in attribution["inferledger_consumer_lag_messages"]
           if lab["topic"] == events]  # fmt: skip
    assert lag and all(v >= 0 for _, v in lag), lag
    assert {lab["partition"] for lab, _ in lag} <= {"0", "1", "2", "3"}
    uncommitted = attribution["inferledger_consumer_uncommitted_messages"]
    assert any(lab["topic"] == events for lab, _ in uncommitted), uncommitted
    assert value(attribution, "inferledger_healthy", component="attribution") == 1
    assert value(attribution, "inferledger_dependency_up", dependency="postgres") == 1
    assert value(attribution, "inferledger_dependency_up", dependency="kafka") == 1

    # the ledger writer
    assert value(ledger, "inferledger_ledger_entries_written_total") >= 7
    allocations = settings.topic("cost-allocations")
    assert any(
        lab["topic"] == allocations for lab, _ in ledger["inferledger_consumer_lag_messages"]
    )
    assert value(ledger, "inferledger_event_to_ledger_seconds_count", decision="close") == 2
    assert value(ledger, "inferledger_event_to_ledger_seconds_count", decision="adjustment") >= 1
    # the buckets ended in 2024: everything sits in the last, +Inf bucket, and the sum is years
    inf = value(ledger, "inferledger_event_to_ledger_seconds_bucket", decision="close", le="+Inf")
    week = value(ledger, "inferledger_event_to_ledger_seconds_bucket", decision="close",
                 le="604800.0")  # fmt: skip
    assert (inf, week) == (2, 0)
    assert value(ledger, "inferledger_event_to_ledger_seconds_sum", decision="close") > 3e7
    assert value(ledger, "inferledger_healthy", component="ledger") == 1

    # the alerts processor: health and its counters
    assert value(alerts, "inferledger_healthy", component="alerts") == 1
    assert any(re.match(r"inferledger_processed", n) for n in alerts)
