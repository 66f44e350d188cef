"""Pausing partitions that run ahead loses nothing: with a 1 s lead, attribution pauses and
resumes its events partitions all through a run, and the ledger is still one clean run's."""

from __future__ import annotations

import json

from tests.helpers import cli, expected_ledger, ingest_fleet_replay, ledger


def test_partitions_paused_and_resumed_through_a_run_lose_nothing(cli_env, settings, tmp_path):
    env = dict(
        cli_env,
        INFERLEDGER_MAX_BATCH_EVENTS="10",
        INFERLEDGER_TAKE_MAX="3",
        INFERLEDGER_PARTITION_LEAD_SECONDS="1",
        INFERLEDGER_LOG_FORMAT="json",
    )
    events, fleet_rates = ingest_fleet_replay(env, tmp_path, 1500)

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
