"""Two attribution workers in one consumer group (DESIGN.md: more workers take more partitions).

Worker A starts alone and owns every partition; worker B joins half way, the rebalance hands it
half the partitions, and the rest of the input arrives. A must forget the resources it handed
over (else it would close their buckets too, as idle, beside B's usage and with the same entry
ids), and B must restore them from Postgres and read on from the committed offsets. The ledger
must hold, for every bucket that closed, exactly what one worker computes, and count no event
twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from services.contracts import dumps
from services.ingest.trace.fleet import Fleet, default_fleet, rates, rental_window, replay
from tests.helpers import cli, expected_positions, positions, query_rows


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _log_events(log: Path, name: str) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    return [x for x in (json.loads(ln) for ln in lines if ln.startswith("{")) if x["event"] == name]


def _wait(what: str, done: Any, procs: list[subprocess.Popen[bytes]], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"exited while waiting for {what}: {dead}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_two_workers_share_the_partitions_and_the_ledger_is_one_workers(
    cli_env, settings, tmp_path
):
    env = dict(
        cli_env,
        INFERLEDGER_MAX_BATCH_EVENTS="10",
        INFERLEDGER_IDLE_PARTITION_SECONDS="3",  # the watermark moves on once input stops
    )
    fleet = Fleet.from_dict(default_fleet())
    events = sorted(replay(fleet, limit=2500), key=lambda e: e.finished_at)
    fleet_rates = rates(fleet, *rental_window(events))
    half = len(events) // 2
    files = {}
    for name, items in (
        ("rates", fleet_rates),
        ("first", events[:half]),
        ("second", events[half:]),
    ):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_bytes(b"\n".join(dumps(x) for x in items))
    cli(env, "ingest", "rates", str(files["rates"]))
    cli(env, "ingest", "events", str(files["first"]))

    logs = {name: tmp_path / f"{name}.log" for name in ("ledger", "a", "b")}
    procs = [_start(env, logs["ledger"], "ledger"), _start(env, logs["a"], "attribution")]
    db = settings.database_url
    try:
        _wait(
            "worker A's first entries",
            lambda: query_rows(db, "SELECT 1 FROM ledger_entries LIMIT 1"),
            procs,
            120,
        )
        procs.append(_start(env, logs["b"], "attribution"))
        _wait("the rebalance", lambda: _log_events(logs["a"], "resources handed over"), procs, 120)
        cli(env, "ingest", "events", str(files["second"]))

        last: Any = None
        stable_since = time.monotonic()

        def settled() -> bool:  # nothing new in the ledger for 10 s
            nonlocal last, stable_since
            now = query_rows(db, "SELECT count(*), max(recorded_at) FROM ledger_entries")[0]
            if now != last:
                last, stable_since = now, time.monotonic()
            return time.monotonic() - stable_since > 10

        _wait("the ledger to settle", settled, procs, 240)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    handed = _log_events(logs["a"], "resources handed over")
    assert handed and handed[0]["partitions"], handed
    got = positions(db)
    expected = expected_positions(events, fleet_rates)
    closed = {(r, b) for r, b, _, _ in got}
    assert len(closed) >= len({(r, b) for r, b, _, _ in expected}) // 2, "too few buckets closed"
    for resource, bucket in closed:  # a closed bucket holds exactly one worker's positions
        mine = {k: v for k, v in got.items() if k[:2] == (resource, bucket)}
        want = {k: v for k, v in expected.items() if k[:2] == (resource, bucket)}
        assert mine == want, (resource, bucket)
    twice = query_rows(
        db, "SELECT event_id FROM counted_events GROUP BY event_id HAVING count(*) > 1"
    )
    assert twice == []
