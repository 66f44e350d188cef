"""Budget alerts end to end: the worked example's ledger crosses an acme budget's thresholds;
the alerts fire once and reach the budget-alerts topic and real webhook receivers (one fails its
first attempts, both verify the signature), exactly once each, across re-runs and a credit."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import WebhookReceiver, cli, read_topic

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = "s3cret-for-tests"


@pytest.fixture
def receivers():
    flaky, steady = WebhookReceiver(SECRET.encode(), fail_first=2), WebhookReceiver(SECRET.encode())
    yield flaky, steady
    flaky.close()
    steady.close()


def alerts(db_url: str) -> list[tuple[str, str, Decimal | None]]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind, subject, threshold FROM budget_alerts ORDER BY fired_at, subject")
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_thresholds_fire_once_and_reach_every_target_once(cli_env, settings, receivers):
    flaky, steady = receivers
    env = dict(
        cli_env,
        INFERLEDGER_WEBHOOK_SECRET=SECRET,
        INFERLEDGER_WEBHOOK_BACKOFF_SECONDS="0.2",
    )
    budget_id = cli(
        env, "budget", "set", "--tenant", "acme", "--period", "day", "--amount", "0.5",
        "--webhook", flaky.url, "--webhook", steady.url, "--name", "acme daily",
    ).stdout.strip()  # fmt: skip
    cli(env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
    cli(env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
    cli(env, "run", "all", "--until-idle")

    # acme spent 0.416602316602 of 0.5 on 2024-01-01: 50 % and 80 % crossed, 100 % not
    assert alerts(settings.database_url) == [
        ("threshold", "0.5", Decimal("0.500000000000")),
        ("threshold", "0.8", Decimal("0.800000000000")),
    ]
    for receiver in (flaky, steady):
        got = sorted((a["kind"], a["threshold"]) for a in receiver.accepted)
        assert got == [("threshold", "0.5"), ("threshold", "0.8")], receiver.accepted
        assert receiver.bad_signatures == 0
        for a in receiver.accepted:
            assert a["budget_id"] == budget_id and a["tenant_id"] == "acme"
            assert a["spend"] == "0.416602316602" and a["currency"] == "USD"
            assert "acme daily" in a["text"]
    assert flaky.requests == 4  # two refused, then each alert once
    topic = read_topic(settings.kafka_bootstrap, settings.topic("budget-alerts"))
    assert sorted(a["threshold"] for a in topic) == ["0.5", "0.8"]

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        attempts = conn.execute(
            text(
                "SELECT target, count(*), bool_or(delivered) FROM alert_deliveries "
                "GROUP BY target ORDER BY target"
            )
        ).all()
    engine.dispose()
    by_target = {t: (n, ok) for t, n, ok in attempts}
    assert by_target[flaky.url] == (4, True) and by_target[steady.url] == (2, True)
    assert all(ok for _, ok in by_target.values())

    # the whole pipeline again: nothing new fires, nothing is delivered again
    cli(env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
    cli(env, "run", "all", "--until-idle")
    assert len(alerts(settings.database_url)) == 2
    assert len(steady.accepted) == 2 and len(flaky.accepted) == 2

    # a credit brings acme's spend under both thresholds: neither fires again
    credit = {
        "line_id": "credit-1",
        "resource_id": "node-1",
        "period_start": "2024-01-01T00:00:00Z",
        "period_end": "2024-01-01T00:02:00Z",
        "charge_category": "credit",
        "cost": "-1.2",
        "currency": "USD",
    }
    cli(env, "ingest", "billing", "-", "--format", "jsonl", stdin=json.dumps(credit).encode())
    cli(env, "run", "all", "--until-idle")
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        spend = conn.execute(
            text("SELECT inferledger_budget_spend(:b, '2024-01-01', '2024-01-02')"),
            {"b": budget_id},
        ).scalar_one()
    engine.dispose()
    assert spend < Decimal("0.25"), spend  # under both thresholds now
    assert len(alerts(settings.database_url)) == 2
    assert len(steady.accepted) == 2 and len(flaky.accepted) == 2
    assert "audit passed" in cli(env, "audit").stdout
