"""The benchmark as a user runs it, on a small workload: it must keep working end to end.

Speed is not asserted here (bench/ measures it); this checks that every case runs through the
real broker and Postgres, that the pipeline counted every event, that the results are written
where asked, and that the scratch databases are gone afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import query_rows

ROOT = Path(__file__).resolve().parents[2]


def bench_databases(db_url: str) -> set[str]:
    """The benchmark's scratch databases (others' come and go on a shared server meanwhile)."""
    rows = query_rows(db_url, "SELECT datname FROM pg_database WHERE datname LIKE 'bench%'")
    return {r[0] for r in rows}


def test_the_benchmark_runs_every_case_and_writes_its_results(cli_env, settings, tmp_path):
    assert settings.database_url
    before = bench_databases(settings.database_url)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--events",
            "3000",
            "--cases",
            "batched,batched-2w,batched-4,single",
            "--stream-rate",
            "0",
            "--no-profile",
            "--ledger-rows",
            "2000",
            "--results",
            str(tmp_path),
        ],
        env=cli_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (report_file,) = tmp_path.glob("2*.json")
    report = json.loads(report_file.read_text())
    assert [c["case"] for c in report["cases"]] == ["batched", "batched-2w", "batched-4", "single"]
    for case in report["cases"]:
        assert case["events"] == 3000 and "warning" not in case, case
        pipeline = case["pipeline"]
        assert pipeline["requests_counted"] == 3000
        assert pipeline["ledger_rows"] > 0 and pipeline["events_per_s"] > 0
        assert case["raw_ceiling"]["events"] == case["faust_baseline"]["events"] == 3000
        cpu = case["cpu_per_event"]
        assert set(cpu["cpu_seconds_in_measured_run"]) >= {"attribution", "ledger", "postgres"}
        per_event = sum(cpu["us_per_event"][k] for k in ("attribution", "ledger", "postgres"))
        assert 0 < per_event <= cpu["pipeline_us_per_event"] + 0.3  # rounded per process
        assert pipeline["ratio_to_faust_events_per_s"] > 0
    batched, two_workers, four, single = report["cases"]
    assert batched["messages"] == two_workers["messages"]
    # a small run's nodes are sparse: a 1 s linger may already send at most 4 events a message
    assert batched["messages"] <= four["messages"] < single["messages"] == 3000
    assert four["messages"] >= 750  # at most 4 events a message
    # per attribution worker: the events partitions it covered, the events it processed and
    # its CPU per event; two workers cover the four partitions together, each event once
    one, two = batched["workers"], two_workers["workers"]
    assert [w["worker"] for w in one] == ["attribution"] and one[0]["partitions"] == [0, 1, 2, 3]
    assert one[0]["events_processed"] == 3000 and one[0]["cpu_us_per_event"] > 0
    assert [w["worker"] for w in two] == ["attribution-1", "attribution-2"]
    assert set().union(*(w["partitions"] for w in two)) == {0, 1, 2, 3}
    assert sum(w["events_processed"] for w in two) >= 3000
    for w in two:
        assert w["cpu_seconds"] > 0 and w["peak_rss_mb"] > 0, w
    assert two_workers["cpu_per_event"]["cpu_seconds_in_measured_run"]["attribution"]
    assert report["ledger_write_capacity"]["rows"] == 2000
    table = (tmp_path / "latest.md").read_text()
    assert "| batched | 3,000 |" in table and "CPU µs per event" in table
    assert "| batched-2w | attribution-2 |" in table
    assert bench_databases(settings.database_url) == before  # scratch databases dropped


def test_the_alerts_benchmark_times_every_alert_and_drops_its_database(cli_env, settings, tmp_path):
    """bench/alerts.py on two rounds: each round's 80 % alert is timed on every surface."""
    assert settings.database_url
    proc = subprocess.run(
        [sys.executable, "-m", "bench.alerts", "--rounds", "2", "--results", str(tmp_path)],
        env=cli_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (report_file,) = tmp_path.glob("alerts-2*.json")
    report = json.loads(report_file.read_text())
    assert report["rounds"] == 2 and not any(report["missing"].values()), report
    for latency in report["latency_seconds"].values():
        assert latency["n"] == 2 and latency["max"] is not None
    assert report["webhook_posts"] == report["topic_messages"] == 4  # 50 % and 80 %, each once
    for row in report["per_round"]:
        assert row["fired"] == ["threshold:0.500000000000", "threshold:0.800000000000"], row
    assert "commit → webhook received" in (tmp_path / "alerts-latest.md").read_text()
    assert report["database"].startswith("bench_alerts_")
    assert report["database"] not in bench_databases(settings.database_url)  # dropped


def test_the_sql_benchmark_builds_a_ledger_and_times_the_views(cli_env, settings, tmp_path):
    """`./dev bench sql` on a small ledger: every query answers, the rollup audit finds no
    difference, the results are written, and the scratch database is dropped."""
    assert settings.database_url
    name = f"bench_sql_test_{tmp_path.name[-8:].lower()}".replace("-", "_")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sql", "--entries", "40000", "--resources", "20",
         "--tenants", "60", "--models", "4", "--days", "62", "--runs", "1",
         "--database", name, "--results", str(tmp_path)],
        env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    (report_file,) = tmp_path.glob("sql-*.json")
    report = json.loads(report_file.read_text())
    assert 30_000 < report["ledger"]["entries"] <= 40_000
    assert report["ledger"]["resources"] == 20 and report["ledger"]["models"] == 4
    assert report["audit_rollup"]["differences"] == 0
    queries = {q["query"]: q for q in report["queries"]}
    assert len(queries) == 7
    for q in queries.values():
        assert q["rows"] > 0 and q["wall_s"] > 0 and "Execution Time" in q["plan"], q["query"]
    assert name not in bench_databases(settings.database_url)
