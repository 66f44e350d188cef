"""`inferledger top --once` against a real streaming pipeline (`run all` with metrics) fed the
worked example: every processor up, events counted, entries written, the last hour's spend
per tenant (docs/sql.md: acme 0.416602316602, beta 0.083397683398, idle 0.70 USD), an
endpoint that does not answer shown as down, and no database as one clear line."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_pipeline_metrics import free_ports
from tests.helpers import cli, free_port, start_cli, stop_cli

DATA = Path(__file__).resolve().parents[1] / "data"


def squeezed(out: str) -> list[str]:
    return [" ".join(line.split()) for line in out.splitlines()]


def test_top_once_shows_the_running_pipeline_and_the_last_hours_spend(cli_env, tmp_path):
    cli(cli_env, "migrate")
    port = free_ports(3)  # attribution, ledger, alerts
    env = {
        **cli_env,
        "INFERLEDGER_METRICS_LISTEN": f"127.0.0.1:{port}",
        "INFERLEDGER_DATA_DIR": str(tmp_path / "embedded"),  # no `up` of the checkout's
    }
    streaming = start_cli(env, "run", "all")
    try:
        cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
        cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
        cli(cli_env, "run", "all", "--until-idle", "--follow", "--timeout", "120")
        down = free_port()
        # from INFERLEDGER_METRICS_LISTEN (the three ports `run all` gave its processors)
        listen = cli(env, "top", "--once", "--interval", "0.5", timeout=60).stdout
        given = [f"127.0.0.1:{port + n}" for n in range(3)] + [f"127.0.0.1:{down}"]
        args = [a for url in given for a in ("--metrics", url)]
        out = cli(env, "top", "--once", "--interval", "0.5", *args, timeout=60).stdout
    finally:
        log = stop_cli(streaming)
    assert streaming.returncode == 0, log

    lines = squeezed(out)
    for n, component in enumerate(("attribution", "ledger", "alerts")):
        url = f"http://127.0.0.1:{port + n}/metrics"
        assert any(x.startswith(f"{component} {url} up healthy") for x in lines), out
        assert any(x.startswith(f"{component} {url} up") for x in squeezed(listen)), listen
    assert any(f"http://127.0.0.1:{down}/metrics down (" in x and "refused" in x for x in lines), (
        out
    )
    assert any(x.startswith("events in (accepted) ") and x.endswith(" 3") for x in lines), out
    written = next(x for x in lines if x.startswith("ledger entries out (written) "))
    assert int(written.split()[-1]) >= 6, out
    assert any(x.startswith("buckets closed ") and x.endswith(" 2") for x in lines), out
    assert "dead letters: none" in lines, out
    assert "watermark age" in out
    # the worked example's two buckets end at 2024-01-01 00:02: the hour before it
    assert "buckets from 2023-12-31 23:02:00 to 2024-01-01 00:02:00 UTC" in lines, out
    assert "acme USD 0.42" in lines, out
    assert "beta USD 0.08" in lines, out
    assert "idle USD 0.70" in lines, out
    assert "total USD 1.20" in lines, out

    # no database to read: one line, exit 0
    no_db = {**env, "INFERLEDGER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{down}/x"}
    out = cli(no_db, "top", "--once", "--interval", "0.1", "--metrics", f"127.0.0.1:{down}").stdout
    assert any(
        x.startswith("spend of the last hour: cannot read the ledger: ") for x in squeezed(out)
    ), out
