"""Defect 0 of issue 13: events lost with no fault at all.

A seeded 2-hour scenario (400 events over 5 rated resources, 5 tenants, 3 models, zero-length
and multi-bucket requests, a rated spare node with no traffic) is shuffled and fed in 8 chunks a
few seconds apart to a streaming ``run all``, which is then stopped with SIGTERM (a clean stop,
as a deploy does); ``run all --until-idle`` finishes the input. The ledger must hold exactly the
pure core's net positions, and count every event exactly once in ``counted_events``.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.helpers import (
    cli,
    counting_faults,
    expected_positions,
    explain_lost,
    fault_scenario,
    kill_group,
    position_diff,
    positions,
    publish_events,
    publish_rates,
    start_run,
)

SEED = 13

# bounded: a hang fails this test, not the suite
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_shuffled_chunks_then_sigterm_count_every_event_once(cli_env, settings, tmp_path):
    events, rates = fault_scenario(SEED)
    shuffled = list(events)
    random.Random(SEED).shuffle(shuffled)
    chunks = [shuffled[i::8] for i in range(8)]
    publish_rates(settings, rates)
    log = tmp_path / "stream.log"
    proc = start_run(cli_env, log, "all")
    try:
        time.sleep(4)
        for chunk in chunks:
            publish_events(settings, chunk)
            time.sleep(3)
        time.sleep(6)
        assert proc.poll() is None, f"streaming run exited early:\n{log.read_text()[-3000:]}"
    finally:
        proc.send_signal(signal.SIGTERM)  # the parent stops its two children with TERM
        if kill_group(proc, 0, 40) is None:
            kill_group(proc, signal.SIGKILL)
    cli(cli_env, "run", "all", "--until-idle", timeout=180)

    faults = counting_faults(settings.database_url, events)
    got, want = positions(settings.database_url), expected_positions(events, rates)
    lost = [e for e in events if e.event_id in faults["missing"]]
    assert faults == {"missing": [], "twice": [], "unknown": []}, (
        f"{len(lost)} events never counted: "
        + "; ".join(
            f"{e.event_id} {e.resource_id} {e.status} {e.started_at:%H:%M:%S.%f}"
            f"+{(e.finished_at - e.started_at).total_seconds()}s"
            for e in lost
        )
        + "\n"
        + "\n".join(explain_lost(settings.database_url, events, faults["missing"]))
    )
    assert got == want, position_diff(got, want)
