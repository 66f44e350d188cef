"""The SQL surface on a large ledger: builds a year of entries in a scratch database, then times
the views as a user queries them.

    ./dev bench sql                      # 10,000,000 entries: a year, 1,000 resources,
                                         # 500 tenants, 50 models (about 10 minutes)
    ./dev bench sql --entries 200000 --resources 100 --days 60   # a quicker look
    ./dev bench sql --keep               # keep the database (bench_sql) for a look with SQL
    ./dev bench sql --reuse              # time the queries on the kept database again

The ledger is written through the real schema (migrations, month partitions, the daily rollup
trigger, row hashes), a month per statement, as the writer would: each resource gets one entry
per bucket for its idle time and one per tenant it served in that bucket (one to six tenants,
from the twenty that use its model). Each resource serves one model; each tenant uses two.

The queries run as the database's owner, and some as a tenant's login and a reader login (made
with `inferledger roles`'s code, dropped at the end), so row-level security is measured too.
Each query runs once to warm the cache, then five times; the report gives the median wall time
of the query as a client sees it, and the planning and execution time Postgres reports in
EXPLAIN ANALYZE, with the plan. Results go to bench/results/sql-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

from bench.measure import ROOT, machine
from services.ledger.db import migrate
from services.ledger.hashing import ROW_HASH_SQL
from services.runtime.config import load_settings
from services.runtime.stack import drop_database, local_stack, recreate_database

RESULTS = ROOT / "bench" / "results"
DATABASE = "bench_sql"
START = date(2025, 1, 1)
PER_BUCKET = 4.5  # entries per resource-bucket on average: one idle, one to six tenants
DIVISORS = (60, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400)

# One month of entries. h is a deterministic hash of (resource, bucket); a resource-bucket has
# 1 + h % 6 tenant entries, each with a 1 to 9 % share of the bucket's cost, and an idle entry
# with the rest. Tenant j of resource r: from the 20 tenants of model r % models (3j apart, so
# the six are distinct); neighbouring models share ten tenants.
MONTH = f"""
INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model, resource_id,
    bucket_start, bucket_seconds, completions, failed_requests, prompt_tokens,
    cached_prompt_tokens, completion_tokens, work_units, busy_seconds, amount, currency,
    row_hash)
SELECT x.*, {ROW_HASH_SQL}
FROM (
    SELECT md5(r || '|' || b || '|' || j)::varchar(64) AS entry_id,
           CASE WHEN j = 0 THEN 'idle' ELSE 'usage' END AS entry_kind,
           'provisional' AS cost_basis,
           CASE WHEN j > 0
                THEN 'tenant-' || lpad(((r % :models) * 10 + (h + 3 * j) % 20)
                                       % :tenants || '', 4, '0') END AS tenant_id,
           CASE WHEN j > 0 THEN 'model-' || lpad(r % :models || '', 2, '0') END AS model,
           'gpu-' || lpad(r || '', 4, '0') AS resource_id,
           b AS bucket_start, :bucket AS bucket_seconds,
           CASE WHEN j > 0 THEN (h / j) % 40 + 1 ELSE 0 END AS completions,
           CASE WHEN j > 0 THEN (h / j) % 3 ELSE 0 END AS failed_requests,
           CASE WHEN j > 0 THEN ((h / j) % 40 + 1) * 900 ELSE 0 END AS prompt_tokens,
           CASE WHEN j > 0 THEN ((h / j) % 40 + 1) * 100 ELSE 0 END AS cached_prompt_tokens,
           CASE WHEN j > 0 THEN ((h / j) % 40 + 1) * 250 ELSE 0 END AS completion_tokens,
           CASE WHEN j > 0 THEN ((h / j) % 40 + 1) * 1150 ELSE 0 END::numeric(38, 6)
               AS work_units,
           round(:bucket * share, 6)::numeric(20, 6) AS busy_seconds,
           round(price * :bucket / 3600 * share, 12)::numeric(38, 12) AS amount,
           'USD' AS currency
    FROM generate_series(0, :resources - 1) r
    CROSS JOIN generate_series(CAST(:lo AS timestamptz), CAST(:hi AS timestamptz)
                                   - make_interval(secs => :bucket),
                               make_interval(secs => :bucket)) b
    CROSS JOIN LATERAL (SELECT abs(hashtext(r || '|' || b)) AS h,
                               (2 + r % 7)::numeric AS price) k
    CROSS JOIN LATERAL generate_series(0, 1 + k.h % 6) j
    CROSS JOIN LATERAL (
        SELECT CASE WHEN j > 0 THEN ((k.h / j) % 9 + 1) / 100.0
                    ELSE 1 - (SELECT sum((k.h / i) % 9 + 1) / 100.0
                              FROM generate_series(1, 1 + k.h % 6) i) END AS share
    ) s
) x
"""

QUERIES = (
    (
        "v_cost_per_completion: one tenant, one month",
        1.0,
        "SELECT * FROM v_cost_per_completion WHERE tenant_id = :tenant "
        "AND day >= :first AND day < :next ORDER BY day, model",
    ),
    (
        "v_tenant_spend: every tenant, one month",
        2.0,
        "SELECT tenant_id, currency, sum(amount) AS amount, sum(idle_share) AS idle_share, "
        "sum(amount_with_idle) AS amount_with_idle FROM v_tenant_spend "
        "WHERE day >= :first AND day < :next GROUP BY tenant_id, currency ORDER BY 1, 2",
    ),
    (
        "v_gpu_utilization: one resource, one month",
        1.0,
        "SELECT * FROM v_gpu_utilization WHERE resource_id = :resource "
        "AND hour >= :first AND hour < :next ORDER BY hour",
    ),
    (
        "v_cost_per_completion_with_idle: one tenant, one month",
        None,
        "SELECT * FROM v_cost_per_completion_with_idle WHERE tenant_id = :tenant "
        "AND day >= :first AND day < :next ORDER BY day, model",
    ),
    (
        "as the tenant's login: v_cost_per_completion, one month (row-level security)",
        1.0,
        "SELECT * FROM v_cost_per_completion WHERE day >= :first AND day < :next "
        "ORDER BY day, model",
    ),
    (
        "as the tenant's login: v_my_tenant_spend, one month",
        None,
        "SELECT * FROM v_my_tenant_spend WHERE day >= :first AND day < :next ORDER BY day",
    ),
    (
        "as a reader login: v_tenant_spend, every tenant, one month",
        2.0,
        "SELECT tenant_id, currency, sum(amount) AS amount, sum(idle_share) AS idle_share, "
        "sum(amount_with_idle) AS amount_with_idle FROM v_tenant_spend "
        "WHERE day >= :first AND day < :next GROUP BY tenant_id, currency ORDER BY 1, 2",
    ),
)
TENANT = "tenant-0042"
KINDS = ("tenant", "reader")


def logins(url: str) -> dict[str, str]:
    """The bench's logins, named after its database (roles are the server's, not the
    database's: two benchmarks on one server must not share them)."""
    database = make_url(url).database
    return {kind: f"{database}_{kind}" for kind in KINDS}


def login_url(url: str, name: str) -> str:
    """Which login runs a query: the database's owner, or the bench's tenant or reader login."""
    for kind, role in logins(url).items():
        if name.startswith(f"as {'a' if kind == 'reader' else 'the'} {kind}"):
            return make_url(url).set(username=role, password=None).render_as_string(False)
    return url


def make_logins(url: str) -> None:
    from services.ledger.roles import grant

    engine = create_engine(url)
    try:
        grant(engine, "tenant", logins(url)["tenant"], tenant=TENANT)
        grant(engine, "reader", logins(url)["reader"])
    finally:
        engine.dispose()


def drop_logins(url: str) -> None:
    """The logins are the server's, not the database's: revoked, then dropped."""
    from services.ledger.roles import revoke

    engine = create_engine(url)
    try:
        for role in logins(url).values():
            with contextlib.suppress(Exception):
                revoke(engine, role)
            with engine.begin() as conn:
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    finally:
        engine.dispose()


def bucket_seconds(entries: int, resources: int, days: int) -> int:
    """The shortest bucket (a divisor of a day) that keeps the ledger within ``entries``."""
    for b in DIVISORS:
        if resources * days * 86400 / b * PER_BUCKET <= entries:
            return b
    return DIVISORS[-1]


def months(first: date, days: int) -> list[tuple[datetime, datetime]]:
    end = datetime.combine(first + timedelta(days=days), datetime.min.time(), UTC)
    lo = datetime.combine(first, datetime.min.time(), UTC)
    out = []
    while lo < end:
        nxt = (lo.replace(day=1) + timedelta(days=32)).replace(day=1)
        out.append((lo, min(nxt, end)))
        lo = nxt
    return out


def build(url: str, args: argparse.Namespace) -> dict[str, Any]:
    bucket = bucket_seconds(args.entries, args.resources, args.days)
    engine = create_engine(url)
    started = time.perf_counter()
    written = 0
    params = {"models": args.models, "tenants": args.tenants, "resources": args.resources}
    for lo, hi in months(START, args.days):
        with engine.begin() as conn:
            conn.execute(text("SELECT inferledger_ledger_partition(:m)"), {"m": lo.date()})
            n = conn.execute(text(MONTH), {**params, "bucket": bucket, "lo": lo, "hi": hi})
            written += n.rowcount
        rate = written / (time.perf_counter() - started)
        print(f"[build] {lo:%Y-%m}: {written:,} entries, {rate:,.0f}/s", file=sys.stderr)
    seconds = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return {
        "entries": written,
        "bucket_seconds": bucket,
        "build_seconds": round(seconds, 1),
        "entries_per_s": round(written / seconds),
    }


def describe(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            text("""SELECT (SELECT count(*) FROM ledger_entries) AS entries,
                           (SELECT count(*) FROM ledger_daily) AS daily_rows,
                           (SELECT count(DISTINCT resource_id) FROM ledger_daily) AS resources,
                           (SELECT count(DISTINCT tenant_id) FROM ledger_daily) AS tenants,
                           (SELECT count(DISTINCT model) FROM ledger_daily) AS models,
                           (SELECT min(day) FROM ledger_daily) AS first_day,
                           (SELECT max(day) FROM ledger_daily) AS last_day,
                           (SELECT count(*) FROM pg_inherits
                            WHERE inhparent = 'ledger_entries'::regclass) AS partitions,
                           pg_size_pretty(pg_database_size(current_database())) AS size""")
        ).one()
    engine.dispose()
    return {k: str(v) if isinstance(v, date) else v for k, v in row._mapping.items()}


def time_queries(url: str, runs: int) -> list[dict[str, Any]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        first = conn.execute(text("SELECT min(day) FROM ledger_daily")).scalar_one()
        last = conn.execute(text("SELECT max(day) FROM ledger_daily")).scalar_one()
    month = (first + (last - first) / 2).replace(day=1)  # the month in the middle
    params = {
        "tenant": TENANT,
        "resource": "gpu-0017",
        "first": month,
        "next": (month + timedelta(days=32)).replace(day=1),
    }
    out = []
    engines = {url: engine}
    for name, target, sql in QUERIES:
        walls, plans = [], []
        who = login_url(url, name)
        if who not in engines:
            engines[who] = create_engine(who)
        with engines[who].connect() as conn:
            rows = conn.execute(text(sql), params).all()  # warm
            for _ in range(runs):
                t0 = time.perf_counter()
                conn.execute(text(sql), params).all()
                walls.append(time.perf_counter() - t0)
                explained = conn.execute(
                    text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql), params
                ).scalar_one()
                plans.append(explained[0])
            plan_text = "\n".join(
                r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params)
            )
        wall = statistics.median(walls)
        out.append(
            {
                "query": name,
                "sql": sql,
                "params": {k: str(v) for k, v in params.items()},
                "rows": len(rows),
                "wall_s": round(wall, 4),
                "planning_ms": round(statistics.median(p["Planning Time"] for p in plans), 2),
                "execution_ms": round(statistics.median(p["Execution Time"] for p in plans), 2),
                "target_s": target,
                "met": None if target is None else wall < target,
                "plan": plan_text,
            }
        )
        print(f"[query] {name}: {wall:.3f} s, {len(rows)} rows", file=sys.stderr)
    for e in engines.values():
        e.dispose()
    return out


def audit_rollup(url: str) -> dict[str, Any]:
    from services.ledger.audit import ROLLUP_DIFF

    engine = create_engine(url)
    t0 = time.perf_counter()
    with engine.connect() as conn:
        diff = conn.execute(text(ROLLUP_DIFF)).all()
    engine.dispose()
    return {"seconds": round(time.perf_counter() - t0, 1), "differences": len(diff)}


def markdown(report: dict[str, Any]) -> str:
    m, d = report["machine"], report["ledger"]
    lines = [
        f"# SQL on a large ledger ({report['started_at']}, commit {m['commit']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}.",
        f"Ledger: {d['entries']:,} entries, {d['resources']} resources, {d['tenants']} tenants, "
        f"{d['models']} models, {d['first_day']} to {d['last_day']}, {d['partitions']} "
        f"partitions, {d['daily_rows']:,} rollup rows, database {d['size']}.",
    ]
    if "build" in report:
        b = report["build"]
        lines.append(
            f"Built in {b['build_seconds']} s ({b['entries_per_s']:,} entries/s through the "
            f"rollup trigger and row hashes), buckets of {b['bucket_seconds']} s."
        )
    lines += [
        "",
        "| query | rows | median wall | planning | execution | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for q in report["queries"]:
        target = "-" if q["target_s"] is None else f"< {q['target_s']} s"
        met = "-" if q["met"] is None else ("yes" if q["met"] else "NO")
        lines.append(
            f"| {q['query']} | {q['rows']} | {q['wall_s'] * 1000:.1f} ms | "
            f"{q['planning_ms']} ms | {q['execution_ms']} ms | {target} | {met} |"
        )
    if "audit_rollup" in report:
        a = report["audit_rollup"]
        lines += [
            "",
            f"Audit, rollup against journal (a full scan): {a['seconds']} s, "
            f"{a['differences']} differences.",
        ]
    for q in report["queries"]:
        lines += ["", f"## {q['query']}", "", "```sql", q["sql"], "```"]
        lines += ["", "```", q["plan"], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="./dev bench sql",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entries", type=int, default=10_000_000, help="about how many")
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each query")
    parser.add_argument("--database", default=DATABASE, help="the scratch database's name")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="time the kept database again")
    parser.add_argument("--no-audit", action="store_true", help="skip timing the rollup audit")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.tenants < 20 * 2 or args.models < 1:
        parser.error("--tenants must be at least 40 and --models at least 1")
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {k: v for k, v in vars(args).items() if k != "results"},
    }
    with local_stack(load_settings(), need_broker=False) as s:
        assert s.database_url
        url = make_url(s.database_url).set(database=args.database).render_as_string(False)
        try:
            if not args.reuse:
                recreate_database(url)
                migrate(url)
                report["build"] = build(url, args)
            report["ledger"] = describe(url)
            make_logins(url)
            try:
                report["queries"] = time_queries(url, args.runs)
            finally:
                drop_logins(url)
            if not args.no_audit:
                report["audit_rollup"] = audit_rollup(url)
        finally:
            if not args.keep and not args.reuse:
                drop_database(url)
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"].replace(":", "").replace("-", "")
    (out / f"sql-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"sql-{stamp}.md").write_text(markdown(report))
    print(markdown(report))
    if any(q["met"] is False for q in report["queries"]):
        print("a target was missed", file=sys.stderr)


if __name__ == "__main__":
    main()
