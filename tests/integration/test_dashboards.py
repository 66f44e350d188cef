"""The Grafana dashboards in deploy/grafana/dashboards, against what they read.

- Every dashboard parses, has a uid and a title (both unique), panels with unique ids, and
  data sources that are the provisioned ones (deploy/grafana/provisioning/datasources).
- Every SQL query (panels and template variables), its Grafana macros and variables expanded
  the way Grafana expands them, runs against a migrated database holding a ledger (usage, idle,
  reconciliation and unpriced entries, an unallocated bill line) in a read-only transaction (as
  the reader role inferledger_reader where the migrations create it), and returns rows.
- Every metric a PromQL expression uses is one the processors, the gateway or the proxy export
  (their collectors, built in-process as ``run`` builds them)."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from services.contracts import BillingLine
from services.ledger.db import ENTRY_COLUMNS, write_batch
from services.ledger.hashing import entry_values
from services.ledger.writer import Batch  # the writer's own batch
from services.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DAY = datetime(2026, 3, 2, tzinfo=UTC)  # the ledger's first day
FROM, TO = DAY - timedelta(days=1), DAY + timedelta(days=3)  # the dashboards' time range


def provisioned() -> dict[str, dict[str, Any]]:
    out = {}
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yml"):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            out[ds["uid"]] = ds
    return out


def dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text())) for p in DASHBOARDS]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows too."""
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def sql_targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{p['title']} [{t['refId']}]", t)
        for p in panels(board)
        for t in p.get("targets", [])
        if "rawSql" in t
    ]


def promql(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", []) if "expr" in t]


def test_the_datasources_are_provisioned_and_the_ledger_is_read_as_the_reader_login():
    sources = provisioned()
    pg = sources["inferledger-postgres"]
    assert pg["type"] == "grafana-postgresql-datasource"
    assert pg["user"] == "inferledger_grafana"  # `inferledger roles grant-reader` creates it
    assert pg["secureJsonData"]["password"] == "$INFERLEDGER_GRAFANA_DB_PASSWORD"
    assert pg["jsonData"]["database"] == "inferledger"
    assert sources["inferledger-prometheus"]["type"] == "prometheus"
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "inferledger.yml").read_text()
    )["providers"]
    assert [p["options"]["path"] for p in providers] == ["/etc/grafana/dashboards"]


def test_every_dashboard_is_valid_and_uses_only_provisioned_datasources():
    sources = provisioned()
    assert len(DASHBOARDS) == 4
    uids, titles = [], []
    for name, board in dashboards():
        assert board["uid"] and board["title"], name
        assert len(board["uid"]) <= 40, name  # Grafana's limit
        uids.append(board["uid"])
        titles.append(board["title"])
        ids = [p["id"] for p in panels(board)]
        assert ids and len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in panels(board):
            if p.get("type") == "row":
                continue
            assert p["targets"], (name, p["title"])
            for ref in [p["datasource"], *(t["datasource"] for t in p["targets"])]:
                assert ref["uid"] in sources, (name, p["title"], ref)
                assert ref["type"] == sources[ref["uid"]]["type"], (name, p["title"], ref)
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), (name, p["title"])
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                assert var["datasource"]["uid"] in sources, (name, var["name"])
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


# -- the SQL ---------------------------------------------------------------------------------


def grafana_time(t: datetime) -> str:
    return "'" + t.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def quoted(values: list[str]) -> str:
    """A multi-value variable as Grafana's SQL data sources write it: 'a','b'."""
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def expand(sql: str, variables: dict[str, list[str]]) -> str:
    """Grafana's macros and template variables, as its Postgres data source expands them."""
    lo, hi = grafana_time(FROM), grafana_time(TO)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {lo} AND {hi}", sql)
    sql = sql.replace("$__timeFrom()", lo).replace("$__timeTo()", hi)
    for name, values in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        sql = sql.replace(f"${{{name}}}", quoted(values)).replace(f"${name}", quoted(values))
    assert "$" not in sql, f"unexpanded macro or variable: {sql}"
    return sql


def entry(
    kind: str, tenant: str | None, model: str | None, resource: str, at: datetime,
    amount: str, basis: str = "provisional", completions: int = 0, busy: str = "0",
) -> tuple[Any, ...]:  # fmt: skip
    values: dict[str, Any] = {
        "entry_id": uuid.uuid4().hex, "entry_kind": kind, "cost_basis": basis,
        "tenant_id": tenant, "model": model, "resource_id": resource, "bucket_start": at,
        "bucket_seconds": 60, "completions": completions, "failed_requests": 0,
        "prompt_tokens": 900 * completions, "cached_prompt_tokens": 0,
        "completion_tokens": 150 * completions, "work_units": Decimal(1500 * completions),
        "busy_seconds": Decimal(busy), "amount": Decimal(amount), "currency": "USD",
        "billing_line_ids": ["bill-1"] if basis == "billed" else [],
        # goodput and waste (migration 0011): every completion within objective, no waste
        "completions_within_slo": completions, "cancelled_requests": 0,
        "slo_miss_amount": Decimal(0), "failed_amount": Decimal(0),
        "cancelled_amount": Decimal(0),
    }  # fmt: skip
    return entry_values(*(values[c] for c in ENTRY_COLUMNS[:-1]))


def a_ledger() -> Batch:
    """Two tenants on two models and two used nodes over two days, a third node never used
    (unshared idle), a bill's reconciliation, unpriced usage, and a tax line of the bill."""
    rows = []
    for day in (0, 1):
        for minute in range(0, 180, 7):
            at = DAY + timedelta(days=day, hours=10, minutes=minute)
            rows += [
                entry("usage", "acme", "llama-70b", "node-1", at, "0.30", completions=2, busy="30"),
                entry("usage", "beta", "llama-8b", "node-1", at, "0.10", completions=1, busy="10"),
                entry("idle", None, None, "node-1", at, "0.20"),
                entry("usage", "acme", "llama-8b", "node-2", at, "0.05", completions=1, busy="6"),
                entry("idle", None, None, "node-2", at, "0.55"),
                entry("idle", None, None, "node-3", at, "0.60"),
            ]
    at = DAY + timedelta(hours=10)
    rows += [
        entry("reconciliation", "acme", "llama-70b", "node-1", at, "-0.05", basis="billed"),
        entry("reconciliation", None, None, "node-1", at, "-0.03", basis="billed"),
        entry("usage", "beta", "llama-8b", "node-4", at, "0", basis="unpriced", completions=1),
    ]
    tax = BillingLine(
        line_id="tax-node-1", resource_id="node-1", period_start=DAY,
        period_end=DAY + timedelta(hours=1), cost=Decimal("0.09"), currency="USD",
        charge_category="tax", source="focus",
    )  # fmt: skip
    return Batch(entries=rows, bills=[tax])


def test_every_sql_query_of_the_dashboards_runs_on_a_ledger_and_returns_rows(db_url):
    engine = create_engine(db_url)
    write_batch(engine, "dashboards", a_ledger())
    with engine.connect() as conn:
        # the reader role, once the migrations create it and grant it the ledger (a role is
        # the server's, so one left by another database is not enough)
        reader = conn.execute(
            text(
                "SELECT 1 FROM pg_roles WHERE rolname = 'inferledger_reader' AND "
                "has_table_privilege('inferledger_reader', 'ledger_entries', 'SELECT')"
            )
        ).first()
    checked = 0
    for name, board in dashboards():
        with engine.connect() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            if reader is not None:  # the role Grafana's login is a member of
                conn.execute(text("SET LOCAL ROLE inferledger_reader"))
            conn.execute(text("SET LOCAL TimeZone = 'UTC'"))  # Grafana's sessions: UTC
            variables: dict[str, list[str]] = {}
            for var in board["templating"]["list"]:  # in order: a later one may use an earlier
                assert var["type"] == "query", (name, var["name"])
                values = [r[0] for r in conn.execute(text(expand(var["query"], variables)))]
                assert values, f"{name}: variable {var['name']} has no values"
                variables[var["name"]] = values
            for title, target in sql_targets(board):
                sql = expand(target["rawSql"], variables)
                result = conn.execute(text(sql))
                columns, rows = list(result.keys()), result.all()
                assert rows, f"{name}: {title} returned no rows:\n{sql}"
                if target["format"] == "time_series":
                    assert columns[0] == "time" and {"metric", "value"} <= set(columns), title
                    assert all(isinstance(r[0], datetime) for r in rows), title
                checked += 1
            conn.rollback()
    assert checked >= 20


def test_the_main_panels_show_the_ledgers_numbers(db_url):
    """Spot checks that the expanded queries mean what their titles say."""
    engine = create_engine(db_url)
    write_batch(engine, "dashboards", a_ledger())
    boards = dict(dashboards())
    variables = {"tenant": ["acme", "beta"], "model": ["llama-70b", "llama-8b"],
                 "resource": ["node-1", "node-2", "node-3", "node-4"]}  # fmt: skip

    def run(board: str, title: str) -> list[Any]:
        ((_, target),) = [t for t in sql_targets(boards[board]) if t[0] == f"{title} [A]"]
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(expand(target["rawSql"], variables)))]

    buckets = len(range(0, 180, 7)) * 2
    (spend,) = run("spend.json", "Spend (busy cost)")
    assert spend == ("USD", Decimal("0.45") * buckets - Decimal("0.05"))
    per_completion = {
        r[0:2]: r
        for r in run("spend.json", "Cost per completion per tenant and model (time range)")
    }
    acme70 = per_completion["acme", "llama-70b"]
    assert acme70[3] == 2 * buckets  # completions
    assert acme70[5] == Decimal("0.30") * buckets - Decimal("0.05")  # busy cost
    (idle,) = run("gpu-utilization.json", "Idle cost")
    assert idle == ("USD", Decimal("1.35") * buckets - Decimal("0.03"))
    (unshared,) = run("gpu-utilization.json", "Unshared idle cost (no tenant that day)")
    assert unshared == ("USD", Decimal("0.60") * buckets)
    billed = {
        r[0]: r
        for r in run(
            "provisional-vs-billed.json",
            "Provisional versus billed per tenant (idle as its own row)",
        )
    }
    assert billed["acme"][3] == Decimal("-0.05") and billed["(idle)"][3] == Decimal("-0.03")
    assert billed["acme"][4] == billed["acme"][2] + billed["acme"][3]
    (line,) = run("provisional-vs-billed.json", "Unallocated billing lines")
    assert line[0] == "tax-node-1" and "tax" in line[-1]


# -- the PromQL ------------------------------------------------------------------------------

PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "time", "max", "min",
                "avg", "without", "on", "ignoring", "and", "or", "unless", "count"}  # fmt: skip


def exported_names() -> set[str]:
    """Every sample name the processors, the gateway and the proxy export (collectors as
    ``run``, ``gateway`` and ``proxy`` register them, built in-process)."""
    from services.attribution.app import build as build_attribution
    from services.ingest.gateway import Metrics
    from services.ledger.writer import build as build_ledger
    from services.runtime.faustapp import lag_collector
    from services.runtime.health import Health
    from services.runtime.metrics import CountersCollector, HealthCollector, registry_for

    settings = Settings(
        kafka_bootstrap="127.0.0.1:1", database_url="postgresql+psycopg://x@127.0.0.1:1/x"
    )
    registries = []
    for component, build in (("attribution", build_attribution), ("ledger", build_ledger)):
        app: Any
        app, _ = build(settings, None)
        collectors = [*app.inferledger_collectors, lag_collector(component, app),
                      HealthCollector(component, Health())]  # fmt: skip
        registries.append(registry_for(component, app.inferledger_counters, collectors))
    registries.append(registry_for("alerts", Counter(), [HealthCollector("alerts", Health())]))
    registries.append(Metrics().registry)
    proxy = CollectorRegistry()
    proxy.register(CountersCollector("proxy", Counter()))
    registries.append(proxy)
    names: set[str] = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "gauge": [""], "summary": ["_sum", "_count", ""]}  # fmt: skip
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
            names.update(s.name for s in family.samples)
    return names


def test_every_metric_in_the_pipeline_dashboard_is_exported():
    exported = exported_names()
    for expected in (
        "inferledger_consumer_lag_messages",
        "inferledger_consumer_uncommitted_messages",
        "inferledger_watermark_seconds",
        "inferledger_closed_through_seconds",
        "inferledger_event_to_ledger_seconds_bucket",
        "inferledger_ledger_entries_written_total",
        "inferledger_dead_letters_total",
        "inferledger_buckets_closed_total",
        "inferledger_healthy",
    ):
        assert expected in exported, expected
    used: set[str] = set()
    for name, board in dashboards():
        for expr in promql(board):
            # label matchers and strings are not names; what is left before { ( or [ is
            bare = re.sub(r'"[^"]*"', '""', expr)
            bare = re.sub(r"\{[^}]*\}", "{}", bare)
            bare = re.sub(r"\[[^\]]*\]", "[]", bare)
            bare = re.sub(r"by \([^)]*\)", "", bare)
            words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)) - PROMQL_WORDS
            assert words, (name, expr)
            for word in words:
                assert word == "up" or word in exported, f"{name}: {word} is not exported ({expr})"
            used |= words
    assert len(used) >= 10


@pytest.mark.parametrize("name", [p.name for p in DASHBOARDS])
def test_dashboard_panels_fit_the_grid(name):
    board = json.loads((GRAFANA / "dashboards" / name).read_text())
    for p in panels(board):
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (name, p["title"])
