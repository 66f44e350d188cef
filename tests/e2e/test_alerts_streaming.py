"""Streaming budget alerts: two alerts processors at once (`run all`'s and one more), a kill -9
of one mid-period, and a webhook receiver that is down when the alerts fire. Each alert reaches
the receiver exactly once, once it is back, and an alert fires within seconds of the commit of
the entries that crossed its line."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from services.runtime.stack import free_port
from tests.helpers import (
    WebhookReceiver,
    children,
    cli,
    start_cli,
    stop_cli,
    wait_for,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = "s3cret-streaming"
NODE2_RATE = {  # a second node, two minutes at 36/h like node-1
    "resource_id": "node-2",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z",
    "effective_to": "2024-01-01T00:02:00Z",
}
NODE2_EVENT = {  # acme on node-2 for 20 s: 0.20 more, past 100 % of its 0.5 budget
    "event_id": "n2-1",
    "tenant_id": "acme",
    "resource_id": "node-2",
    "model": "llama-70b",
    "engine": "vllm",
    "started_at": "2024-01-01T00:00:00Z",
    "finished_at": "2024-01-01T00:00:20Z",
    "prompt_tokens": 100,
    "completion_tokens": 10,
    "status": "ok",
}


def thresholds(db_url: str) -> list[tuple[str, datetime, datetime]]:
    """(threshold, fired_at, latest recorded_at of the ledger then) per alert."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.subject, a.fired_at, (SELECT max(recorded_at) FROM ledger_entries e "
                "WHERE e.recorded_at <= a.fired_at) FROM budget_alerts a ORDER BY a.subject"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_exactly_once_across_two_processors_a_kill_and_a_receiver_outage(cli_env, settings):
    port = free_port()
    env = dict(
        cli_env,
        INFERLEDGER_WEBHOOK_SECRET=SECRET,
        INFERLEDGER_WEBHOOK_BACKOFF_SECONDS="0.3",  # attempts 0.3, 0.9, 2.7, 8.1 s apart
        INFERLEDGER_ALERTS_INTERVAL_SECONDS="0.5",
    )
    url = f"http://127.0.0.1:{port}/hook"
    cli(env, "budget", "set", "--tenant", "acme", "--period", "day", "--amount", "0.5",
        "--webhook", url)  # fmt: skip
    supervisor = start_cli(env, "run", "all")
    metrics = free_port()
    second = start_cli(
        dict(env, INFERLEDGER_METRICS_LISTEN=f"127.0.0.1:{metrics}"), "run", "alerts"
    )
    receiver = None
    try:
        cli(env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
        cli(env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
        cli(env, "run", "all", "--until-idle", "--follow", "--timeout", "120")
        wait_for(lambda: len(thresholds(settings.database_url)) == 2, 30, "50 % and 80 % alerts")
        # the receiver is down: attempts fail. One alerts processor is killed meanwhile.
        (alerts_child,) = wait_for(lambda: children(supervisor.pid, "alerts"), 30, "alerts")
        os.kill(alerts_child, signal.SIGKILL)
        wait_for(
            lambda: [p for p in children(supervisor.pid, "alerts") if p != alerts_child],
            60,
            "restarted alerts processor",
        )
        receiver = WebhookReceiver(SECRET.encode(), port=port)  # back
        wait_for(lambda: len(receiver.accepted) >= 2, 60, "the two alerts at the receiver")

        # more spend the same day: 100 % crossed, streaming, within seconds of the commit
        cli(env, "ingest", "rates", "-", stdin=json.dumps(NODE2_RATE).encode())
        cli(env, "ingest", "events", "-", stdin=json.dumps(NODE2_EVENT).encode())
        cli(env, "run", "all", "--until-idle", "--follow", "--timeout", "120")
        wait_for(lambda: len(receiver.accepted) >= 3, 60, "the 100 % alert at the receiver")
        time.sleep(3)  # long enough for a second delivery to show, were there one
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        assert b'component="alerts",counter="alerts.waiting"' in scraped
        health = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=10)
        assert health.status == 200
    finally:
        stop_cli(second)
        out = stop_cli(supervisor)
        if receiver is not None:
            receiver.close()
    assert sorted(a["threshold"] for a in receiver.accepted) == ["0.5", "0.8", "1"], out
    assert receiver.bad_signatures == 0
    fired = thresholds(settings.database_url)
    assert [t for t, _, _ in fired] == ["0.5", "0.8", "1"]
    _, fired_at, committed = fired[-1]
    assert (fired_at - committed).total_seconds() < 10  # the 100 % alert after its commit
