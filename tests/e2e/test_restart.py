"""Killing `run` half way and running it again leaves exactly the ledger of one clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from services.contracts import dumps
from services.demo.fleet import DEFAULT_FLEET, Fleet, rates, rental_window, replay
from tests.helpers import cli, expected_ledger, ledger


def entry_info(db_url, ids):
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT resource_id, min(key), max(key), count(*) FROM "
                "attribution_state WHERE kind = 'bucket' GROUP BY 1"
            )
        )
        return [tuple(r) for r in rows]


def expected_starts(events, rates_, ids):
    from services.accounting import AccountingSettings, Book
    from services.attribution.processor import to_rate, to_request

    book = Book(AccountingSettings())
    for r in rates_:
        book.add_rate(to_rate(r))
    for e in events:
        book.add_request(to_request(e))
    return [
        (c.resource_id, c.bucket_start_us)
        for c in book.flush()
        for e in c.entries
        if e.entry_id in ids
    ]


def _count(db_url: str) -> int:
    return len(ledger(db_url))


def test_kill_half_way_and_restart_gives_the_same_ledger(cli_env, settings, tmp_path):
    events = sorted(replay(Fleet.from_dict(DEFAULT_FLEET), limit=2500), key=lambda e: e.finished_at)
    start, end = rental_window(events)
    fleet_rates = rates(Fleet.from_dict(DEFAULT_FLEET), start, end)
    ev_file, rate_file = tmp_path / "events.jsonl", tmp_path / "rates.jsonl"
    ev_file.write_bytes(b"\n".join(dumps(e) for e in events))
    rate_file.write_bytes(b"\n".join(dumps(r) for r in fleet_rates))
    expected = expected_ledger(events, fleet_rates)

    env = dict(cli_env, INFERLEDGER_MAX_BATCH_EVENTS="10", INFERLEDGER_TAKE_MAX="3")
    cli(env, "ingest", "rates", str(rate_file))
    cli(env, "ingest", "events", str(ev_file))

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
    missing = {k: v for k, v in expected.items() if k not in got}
    extra = {k: v for k, v in got.items() if k not in expected}
    if missing or extra:
        from services.accounting import Book  # noqa

        starts = sorted(v for v in expected_starts(events, fleet_rates, missing))
        raise AssertionError((starts, extra, entry_info(settings.database_url, missing)))
    assert got == expected
    assert "audit passed" in cli(env, "audit").stdout
