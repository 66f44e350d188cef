"""`inferledger up`: processors stream until stopped; buckets close as the watermark passes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from tests.helpers import cli, ledger

DATA = Path(__file__).resolve().parents[1] / "data"
LATER = {
    "event_id": "r-later",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "m",
    "engine": "vllm",
    "started_at": "2024-01-01T00:10:00Z",
    "finished_at": "2024-01-01T00:10:05Z",
    "prompt_tokens": 10,
    "completion_tokens": 1,
    "status": "ok",
}


def test_up_streams_and_stops_cleanly(cli_env, settings, tmp_path):
    env = dict(cli_env, INFERLEDGER_DATA_DIR=str(tmp_path / "embedded"))
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cli(env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
        cli(env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
        # event time must pass the buckets' end plus the allowed lateness before they close
        cli(env, "ingest", "events", "-", stdin=json.dumps(LATER).encode())
        deadline = time.monotonic() + 90
        rows = {}
        while time.monotonic() < deadline:
            rows = ledger(settings.database_url)
            if len(rows) >= 6:
                break
            time.sleep(0.5)
        assert sum(a for _, _, _, a, _ in rows.values()) == Decimal("1.2")
        assert sum(c for *_, c in rows.values()) == 3  # r-later's bucket is still open
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "INFERLEDGER_KAFKA_BOOTSTRAP=" in out
    assert not (tmp_path / "embedded" / "stack.json").exists()
