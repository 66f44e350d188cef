"""`run all --until-idle --attribution-workers 2`: two attribution workers in one consumer group
finish a bounded run together, and the ledger is the one one worker writes, entry for entry.

Each worker, once its partitions are drained, passes the run's end marker on to
cost-allocations under an id naming the events partitions it accounted for
(services/contracts/markers.py); the ledger writer is done once those markers together cover
every events partition. A worker that finishes first leaves the group, and the other takes its
partitions over after their markers: it decides them from the committed offsets instead of
waiting for a marker it will never read again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.workload import Workload
from services.contracts import GpuRate, InferenceEvent
from services.runtime.stack import drop_database, recreate_database
from tests.helpers import cli, expected_ledger, query_rows

#: every column of an entry the ledger writer stores (recorded_at aside: when it was written)
COLUMNS = (
    "entry_id, entry_kind, cost_basis, tenant_id, model, resource_id, bucket_start, "
    "bucket_seconds, amount, currency, completions, failed_requests"
)


def run_all(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """`run all --until-idle ARGS`; its JSON log lines (every child process's)."""
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "run", "all", "--until-idle", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]


def entries(db_url: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in query_rows(db_url, f"SELECT {COLUMNS} FROM ledger_entries")}


def test_two_workers_finish_a_bounded_run_and_the_ledger_is_one_workers(
    cli_env, settings, tmp_path: Path
):
    work = Workload(6000, resources=16, tenants=5, seed="scale-out")
    events, rates = list(work.generate()), work.rates()
    files = {"events": tmp_path / "events.jsonl", "rates": tmp_path / "rates.jsonl"}
    files["events"].write_text("\n".join(json.dumps(e) for e in events))
    files["rates"].write_text("\n".join(json.dumps(r) for r in rates))

    # the same input on topics and a database of their own, for one worker
    assert settings.database_url
    one_db = (
        make_url(settings.database_url)
        .set(database=f"il_test_one_{uuid.uuid4().hex[:10]}")
        .render_as_string(False)
    )
    one_env = dict(
        cli_env,
        INFERLEDGER_DATABASE_URL=one_db,
        INFERLEDGER_TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
    )
    recreate_database(one_db)
    try:
        for env in (cli_env, one_env):
            env["INFERLEDGER_MAX_BATCH_EVENTS"] = "10"  # many messages: both workers get some
            cli(env, "ingest", "rates", str(files["rates"]))
            cli(env, "ingest", "events", str(files["events"]))
        two_logs = run_all(cli_env, "--attribution-workers", "2")
        one_logs = run_all(one_env)
        two, one = entries(settings.database_url), entries(one_db)
    finally:
        drop_database(one_db)

    # the ledger of two workers is one worker's, entry for entry, and the pure core's
    assert len(two) > 1000
    assert two == one
    core = expected_ledger(
        [InferenceEvent.model_validate(e) for e in events],
        [GpuRate.model_validate(r) for r in rates],
    )
    assert {r[0]: (r[1], r[3], r[4], r[8], r[10]) for r in two} == core
    twice = query_rows(
        settings.database_url,
        "SELECT event_id FROM counted_events GROUP BY event_id HAVING count(*) > 1",
    )
    assert twice == []
    counted = query_rows(
        settings.database_url, "SELECT count(DISTINCT event_id) FROM counted_events"
    )
    assert counted[0][0] == len(events)

    # both workers consumed events partitions, and their end markers covered all four
    finished = [x for x in two_logs if x["event"] == "attribution finished"]
    assert sorted(x["worker"] for x in finished) == ["1", "2"], finished
    for x in finished:
        assert x.get("events.accepted", 0) > 0, x  # this worker accounted for events itself
    assert set().union(*(x["covers"] for x in finished)) == {0, 1, 2, 3}
    consumed = {x["worker"] for x in two_logs if x["event"] == "first message consumed"}
    assert consumed == {"1", "2"}
    # one worker: no worker field, one marker covering every partition
    (alone,) = [x for x in one_logs if x["event"] == "attribution finished"]
    assert "worker" not in alone and alone["covers"] == [0, 1, 2, 3]


def logged(proc: subprocess.CompletedProcess[str], event: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    return [x for x in lines if x["event"] == event]


def test_a_worker_taking_partitions_over_after_their_markers_decides_from_committed_offsets(
    cli_env, settings, tmp_path: Path
):
    """Worker 1 accounts for the whole bounded run and leaves; worker 2 of the same run then
    gets every partition at committed offsets past the run's markers. It reads nothing again
    and waits for no marker: it finishes at once, covering the partitions, counting nothing."""
    from services.runtime.supervise import begin_bounded_run, format_marker_offsets

    work = Workload(1500, resources=8, tenants=3, seed="take-over")
    events, rates = list(work.generate()), work.rates()
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rates))
    cli(cli_env, "migrate")
    cli(cli_env, "ingest", "rates", str(tmp_path / "r.jsonl"))
    cli(cli_env, "ingest", "events", str(tmp_path / "e.jsonl"))
    run_id, markers = begin_bounded_run(settings)
    assert sorted(markers) == [0, 1, 2, 3]
    args = ["run", "attribution", "--until-idle", "--run-id", run_id,
            "--run-markers", format_marker_offsets(markers)]  # fmt: skip
    first = cli(cli_env, *args, "--worker", "1")
    (done1,) = logged(first, "attribution finished")
    assert done1["covers"] == [0, 1, 2, 3] and done1["events.accepted"] == len(events)
    second = cli(cli_env, *args, "--worker", "2", timeout=120)
    (taken,) = logged(
        second, "partitions taken over after the run's end marker: accounted for already"
    )
    assert taken["partitions"] == [0, 1, 2, 3]
    assert all(taken["committed"][str(p)] > markers[p] for p in range(4))
    (done2,) = logged(second, "attribution finished")
    assert done2["covers"] == [0, 1, 2, 3] and done2.get("events.accepted", 0) == 0
    cli(cli_env, "run", "ledger", "--until-idle", "--run-id", run_id)
    got = query_rows(
        settings.database_url, "SELECT entry_id, entry_kind, tenant_id, model, amount, completions"
        " FROM ledger_entries"
    )  # fmt: skip
    core = expected_ledger(
        [InferenceEvent.model_validate(e) for e in events],
        [GpuRate.model_validate(r) for r in rates],
    )
    assert {r[0]: tuple(r[1:]) for r in got} == core


FAKE_CLI = """
import json, sys, time
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[1] == "attribution" and args[args.index("--worker") + 1] == "2":
    time.sleep(600)  # never given a partition: it would wait for ever
sys.exit(0)
"""


def test_a_bounded_run_stops_a_worker_left_waiting_once_the_ledger_is_complete(
    settings, tmp_path: Path
):
    """`run all --until-idle` with two workers: the supervisor passes each the run, the
    offsets of its markers and its name; once the ledger writer is done (the run's markers
    cover every events partition) a worker still waiting is stopped, and the run succeeds."""
    import time

    from services.runtime.supervise import run_processors

    log = tmp_path / "calls.jsonl"
    fake = [sys.executable, "-c", FAKE_CLI.format(log=str(log))]
    started = time.monotonic()
    run_processors(settings.model_copy(update={"attribution_workers": 2}), True, cli=fake)
    assert time.monotonic() - started < 60
    calls = {(c[1], c[c.index("--worker") + 1] if "--worker" in c else ""): c
             for c in map(json.loads, log.read_text().splitlines())}  # fmt: skip
    assert set(calls) == {("attribution", "1"), ("attribution", "2"), ("ledger", ""),
                          ("alerts", "")}  # fmt: skip
    for k in ("1", "2"):
        c = calls["attribution", k]
        markers = c[c.index("--run-markers") + 1]
        assert [p.split(":")[0] for p in markers.split(",")] == ["0", "1", "2", "3"]
        assert c[c.index("--run-id") + 1] == calls["ledger", ""][-1]
