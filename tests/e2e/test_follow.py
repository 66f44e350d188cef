"""`run all --until-idle --follow`: processors that stream elsewhere (docker compose, another
host) account for everything fed so far, and the command waits for exactly that."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tests.helpers import cli, ledger, start_cli, stop_cli

DATA = Path(__file__).resolve().parents[1] / "data"
LATER = {
    "event_id": "r-later",
    "tenant_id": "acme",
    "resource_id": "node-1",
    "model": "m",
    "engine": "vllm",
    "started_at": "2024-01-01T00:01:30Z",
    "finished_at": "2024-01-01T00:01:35Z",
    "prompt_tokens": 10,
    "completion_tokens": 1,
    "status": "ok",
}


def test_follow_waits_for_streaming_processors_and_only_for_them(cli_env, settings):
    cli(cli_env, "migrate")
    # nothing runs yet: the wait ends in a clear error, not a hang
    nothing = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "run", "all", "--until-idle", "--follow",
         "--timeout", "3"],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert nothing.returncode != 0 and "are they running?" in nothing.stderr
    streaming = start_cli(cli_env, "run", "all")
    try:
        cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
        cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
        done = cli(cli_env, "run", "all", "--until-idle", "--follow", "--timeout", "120")
        assert "6 ledger rows" in done.stderr, done.stderr
        rows = ledger(settings.database_url)
        assert sum(a for _, _, _, a, _ in rows.values()) == Decimal("1.2")
        assert sum(c for *_, c in rows.values()) == 3
        # a late event for a closed bucket: the next heartbeat has it in as an adjustment
        cli(cli_env, "ingest", "events", "-", stdin=json.dumps(LATER).encode())
        cli(cli_env, "run", "all", "--until-idle", "--follow", "--timeout", "120")
        rows = ledger(settings.database_url)
        assert sum(c for *_, c in rows.values()) == 4
        assert sum(a for _, _, _, a, _ in rows.values()) == Decimal("1.2")  # cost conserved
    finally:
        out = stop_cli(streaming)
    assert streaming.returncode == 0, out  # a clean stop
