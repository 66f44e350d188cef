"""`inferledger audit` proves completeness, not only consistency: it fails when an accepted
event was never counted (a hang, a lost message), when a rated bucket has no entries (lost idle
cost), and when allocations wait in the outbox; it passes when nothing was lost.

Each loss is made here the way it happened in the field (input nobody processed, a rate whose
buckets never closed, an outbox row left by a crash), then the real CLI is asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from services.runtime.kafka import make_producer
from tests.helpers import SAMPLE_EVENT, cli

DATA = Path(__file__).resolve().parents[1] / "data"
EVENTS = str(DATA / "worked_example_events.jsonl")
RATES = str(DATA / "worked_example_rates.jsonl")


def audit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def execute(db_url: str, sql: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


def test_audit_fails_on_each_kind_of_loss_and_passes_when_nothing_is_lost(cli_env, settings):
    cli(cli_env, "ingest", "rates", RATES)
    cli(cli_env, "ingest", "events", EVENTS)

    # a hang: events on the topic, an empty ledger (the old audit passed here)
    hung = audit(cli_env)
    assert hung.returncode == 1, hung.stdout
    assert "[FAIL] every valid event on the input topic is counted or dead-lettered" in hung.stdout
    assert "3 missing" in hung.stdout

    cli(cli_env, "run", "all", "--until-idle")
    ok = audit(cli_env)
    assert ok.returncode == 0, ok.stdout
    assert "audit passed" in ok.stdout and "consistency only" not in ok.stdout
    assert "3 counted, 0 dead-lettered, 0 missing" in ok.stdout

    # a message accepted onto the topic that never reached the ledger
    producer = make_producer(settings)
    lost = dict(SAMPLE_EVENT, event_id="lost-1", resource_id="node-a")
    producer.send(settings.topic("inference-events"), key="node-a", value=json.dumps(lost).encode())
    producer.flush(30)
    producer.close(10)
    missing = audit(cli_env)
    assert missing.returncode == 1
    assert "event lost-1 is neither counted nor dead-lettered" in missing.stdout
    # consistency alone cannot see it, and says so
    consistent = audit(cli_env, "--skip-topics")
    assert consistent.returncode == 0
    assert "consistency only" in consistent.stdout
    cli(cli_env, "run", "all", "--until-idle")
    assert audit(cli_env).returncode == 0  # processed now: counted

    # a rated node whose idle buckets never closed (lost idle cost)
    execute(
        settings.database_url,
        "INSERT INTO gpu_rates (rate_id, resource_id, price_per_hour, currency, effective_from, "
        "effective_to, source) VALUES ('spare-rate', 'spare-node', 36, 'USD', "
        "'2024-01-01T00:00:00Z', '2024-01-01T00:02:00Z', 'list')",
    )
    idle = audit(cli_env, "--skip-topics")
    assert idle.returncode == 1
    assert "[FAIL] every rated bucket has entries" in idle.stdout
    assert "spare-node bucket 2024-01-01T00:00:00+00:00 has no entries" in idle.stdout
    execute(settings.database_url, "DELETE FROM gpu_rates WHERE rate_id = 'spare-rate'")

    # allocations a crashed processor stored and never published
    execute(
        settings.database_url,
        "INSERT INTO attribution_outbox (resource_id, payload, created_at) "
        "VALUES ('node-a', '\\x7b7d', now() - interval '1 hour')",
    )
    stuck = audit(cli_env, "--skip-topics")
    assert stuck.returncode == 1
    assert "[FAIL] no allocation waits in the attribution outbox" in stuck.stdout
