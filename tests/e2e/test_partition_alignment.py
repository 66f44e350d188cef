"""Pausing partitions that run ahead loses nothing: with a 1 s lead, attribution pauses and
resumes its events partitions all through a run, and the ledger is still one clean run's."""

from __future__ import annotations

import json

from services.contracts import dumps
from services.demo.fleet import DEFAULT_FLEET, Fleet, rates, rental_window, replay
from tests.helpers import cli, expected_ledger, ledger


def test_partitions_paused_and_resumed_through_a_run_lose_nothing(cli_env, settings, tmp_path):
    events = sorted(replay(Fleet.from_dict(DEFAULT_FLEET), limit=1500), key=lambda e: e.finished_at)
    start, end = rental_window(events)
    fleet_rates = rates(Fleet.from_dict(DEFAULT_FLEET), start, end)
    ev_file, rate_file = tmp_path / "events.jsonl", tmp_path / "rates.jsonl"
    ev_file.write_bytes(b"\n".join(dumps(e) for e in events))
    rate_file.write_bytes(b"\n".join(dumps(r) for r in fleet_rates))
    env = dict(
        cli_env,
        INFERLEDGER_MAX_BATCH_EVENTS="10",
        INFERLEDGER_TAKE_MAX="3",
        INFERLEDGER_PARTITION_LEAD_SECONDS="1",
        INFERLEDGER_LOG_FORMAT="json",
    )
    cli(env, "ingest", "rates", str(rate_file))
    cli(env, "ingest", "events", str(ev_file))

    run = cli(env, "run", "all", "--until-idle")

    finished = [
        json.loads(line)
        for line in run.stderr.splitlines()
        if line.startswith("{") and '"attribution finished"' in line
    ]
    assert finished and finished[0].get("partitions.pauses", 0) > 0, "nothing was paused"
    assert finished[0]["events.accepted"] == len(events)
    assert ledger(settings.database_url) == expected_ledger(events, fleet_rates)
    assert "audit passed" in cli(env, "audit").stdout
