"""``inferledger replay azure-trace``: deterministic files, and a paced feed that lands."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.ingest.trace.azure import TRACE as TRACE_FILE
from services.ingest.trace.fleet import default_fleet
from tests.helpers import cli, read_topic

TRACE = str(TRACE_FILE)


@pytest.fixture
def fleet_file(tmp_path: Path) -> str:
    fleet = dict(default_fleet(), seed="replay-test")
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(fleet))
    return str(path)


def test_same_seed_same_bytes_other_seed_other_events(tmp_path, fleet_file):
    env = {**os.environ, "INFERLEDGER_LOG_FORMAT": "json"}
    outs = []
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "another"])):
        out = tmp_path / f"{name}.jsonl"
        cp = cli(
            env,
            "replay",
            "azure-trace",
            TRACE,
            "--fleet",
            fleet_file,
            "--limit",
            "400",
            "--output",
            str(out),
            *extra,
        )
        summary = json.loads(cp.stdout)
        assert summary["events"] == 400
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]
    events = [json.loads(line) for line in outs[0].splitlines()]
    finishes = [e["finished_at"] for e in events]
    assert finishes == sorted(finishes)  # reported in the order requests finish
    assert len({e["event_id"] for e in events}) == 400
    assert all(
        e["event_id"].startswith("azure-llm-inference-trace-2023-code.replay-test-") for e in events
    )
    # every model is served by a node that serves it, per the fleet file
    serves = {n["resource_id"]: set(n["models"]) for n in default_fleet()["nodes"]}
    assert all(e["model"] in serves[e["resource_id"]] for e in events)


def test_bad_fleet_and_bad_trace_are_clear_errors(tmp_path, fleet_file):
    import subprocess
    import sys

    bad_fleet = tmp_path / "bad.json"
    bad_fleet.write_text(
        json.dumps(
            {
                **default_fleet(),
                "models": [
                    {
                        "name": "orphan",
                        "share": 1,
                        "gpu_count": 1,
                        "prefill_tps": 1,
                        "decode_tps": 1,
                    }
                ],
            }
        )
    )
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,12,3\nyesterday,1,1\n"
    )

    def fails(*args: str) -> str:
        cmd = [sys.executable, "-m", "services.cli.main", "replay", "azure-trace", *args]
        cp = subprocess.run([*cmd, "--output", "-"], capture_output=True, text=True)
        assert cp.returncode != 0, cp.stdout
        return cp.stderr

    for args, needle in (
        (["--fleet", str(bad_fleet)], "orphan is served by no node"),
        (["--fleet", fleet_file, "--start", "2024-01-01T00:00:00"], "needs a UTC offset"),
    ):
        err = fails(TRACE, *args)
        assert needle in err, err
    err = fails(str(bad_trace))
    assert "line 3" in err, err


def test_paced_replay_reaches_the_ledger(cli_env, settings, fleet_file):
    # 300 requests of the trace span about 2 minutes; at 120x they take about a second
    replay = ("replay", "azure-trace", TRACE, "--fleet", fleet_file, "--limit", "300")
    cp = cli(cli_env, *replay, "--speed", "120")
    summary = json.loads(cp.stdout)
    assert summary["events"] == 300
    assert summary["rates"] == len(default_fleet()["nodes"])
    assert summary["emitter"]["sent"] == 300
    assert summary["wall_seconds"] >= 0.5  # paced, not sent at once

    batches = read_topic(settings.kafka_bootstrap, settings.topic("inference-events"))
    sent = [e for b in batches for e in b["events"]]
    assert len(sent) == 300 and all(
        len({e["resource_id"] for e in b["events"]}) == 1 for b in batches
    )

    cli(cli_env, "run", "all", "--until-idle")
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        counted = conn.execute(text("SELECT status, count(*) FROM counted_events GROUP BY 1"))
        by_status: dict[str, int] = dict(counted.all())
        nodes = conn.execute(text("SELECT count(DISTINCT resource_id) FROM ledger_entries"))
        assert nodes.scalar_one() == len(default_fleet()["nodes"])  # the spare node's idle too
    engine.dispose()
    assert by_status == summary["by_status"]
    assert sum(by_status.values()) == 300
    cli(cli_env, "audit")

    # the same replay again is idempotent: the same event ids, nothing counted twice
    cli(cli_env, *replay, "--no-rates")
    cli(cli_env, "run", "all", "--until-idle")
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM counted_events")).scalar_one() == 300
    engine.dispose()
    assert Counter(e["status"] for e in sent) == Counter(summary["by_status"])
