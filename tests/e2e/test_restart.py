"""Killing `run` half way and running it again leaves the ledger of one clean run: the same
rows, or (when the killed run closed a bucket before a slower partition delivered) late
adjustments that bring every position to the same net amount and counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers import (
    cli,
    expected_ledger,
    expected_positions,
    ingest_fleet_replay,
    ledger,
    positions,
)


def _count(db_url: str) -> int:
    return len(ledger(db_url))


def test_kill_half_way_and_restart_gives_the_same_ledger(cli_env, settings, tmp_path):
    env = dict(cli_env, INFERLEDGER_MAX_BATCH_EVENTS="10", INFERLEDGER_TAKE_MAX="3")
    events, fleet_rates = ingest_fleet_replay(env, tmp_path, 2500)
    expected = expected_ledger(events, fleet_rates)

    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "all", "--until-idle"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    seen = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _count(settings.database_url)
            if seen > len(expected) // 4:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 0 < seen < len(expected), f"killed at {seen} of {len(expected)} entries"

    cli(env, "run", "all", "--until-idle")
    got = ledger(settings.database_url)
    if got != expected:
        # events that reached a bucket after it closed (the killed run may close a bucket
        # before a slower partition delivered) are late adjustments, never changed rows: the
        # net position of every resource, bucket, tenant and model is still one clean run's
        assert {v[0] for k, v in got.items() if k not in expected} <= {"late_adjustment"}
        assert positions(settings.database_url) == expected_positions(events, fleet_rates)
    assert "audit passed" in cli(env, "audit").stdout
