"""Streaming supervision (`run all`, `up`): a processor that is killed is started again, and
nothing it had accepted is lost; one that keeps failing ends the supervisor with an error."""

from __future__ import annotations

import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from services.runtime.supervise import ProcessFailed, run_processors
from tests.helpers import children, cli, ledger, start_cli, stop_cli, wait_for

DATA = Path(__file__).resolve().parents[1] / "data"


def test_a_killed_processor_is_started_again_and_nothing_is_lost(cli_env, settings):
    supervisor = start_cli(cli_env, "run", "all")
    try:
        (first,) = wait_for(lambda: children(supervisor.pid, "attribution"), 60, "attribution")
        cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
        cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
        time.sleep(3)  # read and held (its buckets are open): then killed
        os.kill(first, signal.SIGKILL)
        (second,) = wait_for(
            lambda: [p for p in children(supervisor.pid, "attribution") if p != first],
            60,
            "restarted attribution",
        )
        assert supervisor.poll() is None
        cli(cli_env, "run", "all", "--until-idle", "--follow", "--timeout", "180")
        rows = ledger(settings.database_url)
        assert sum(a for _, _, _, a, _ in rows.values()) == Decimal("1.2")
        assert sum(c for *_, c in rows.values()) == 3
        assert children(supervisor.pid, "attribution") == [second]
    finally:
        out = stop_cli(supervisor)
    assert supervisor.returncode == 0, out
    assert "processor exited; starting it again" in out


def test_a_processor_that_keeps_failing_ends_the_supervisor(settings):
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    started = time.monotonic()
    with pytest.raises(ProcessFailed, match="restarted 2 times"):
        run_processors(settings, until_idle=False, cli=failing, max_restarts=2)
    assert time.monotonic() - started >= 1 + 2  # the backoff: 1 s, then 2 s
