"""``inferledger audit``: the ledger's invariants, checked against what was ingested.

Every check reads Postgres only and recomputes independently of the processors' state: the
current cost of each bucket from ``gpu_rates`` and ``billing_lines`` with the core arithmetic,
counted events from ``counted_events``, row hashes in SQL.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import Connection, Engine, text

from services.accounting import AccountingSettings, Bill, Rate, to_us
from services.accounting.pricing import bucket_cost
from services.ledger.completeness import (
    Check,
    TopicEvents,
    buckets_closed,
    events_accounted,
    outbox_drained,
)
from services.ledger.hashing import ROW_HASH_SQL
from services.ledger.rollup import DAILY_SUMS


def run_audit(
    engine: Engine,
    settings: AccountingSettings,
    allocated_categories: list[str],
    topic: TopicEvents | None = None,
) -> list[Check]:
    """Consistency (what the ledger holds adds up) and completeness (nothing accepted is
    missing: with ``topic``, what the events topic and its dead letters hold)."""
    with engine.connect() as conn:
        checks = [
            _bucket_costs(conn, settings, [c.lower() for c in allocated_categories]),
            _billed_lines_reflected(conn, [c.lower() for c in allocated_categories]),
            _no_event_twice(conn),
            _completions(conn),
            _rows_unchanged(conn),
            _rollup_agrees(conn),
            buckets_closed(conn, settings.bucket_seconds),
            outbox_drained(conn),
        ]
        if topic is not None:
            checks.append(events_accounted(conn, topic))
        return checks


def _bucket_costs(conn: Connection, settings: AccountingSettings, allocated: list[str]) -> Check:
    rates: dict[str, list[Rate]] = defaultdict(list)
    for r in conn.execute(
        text(
            "SELECT DISTINCT resource_id, effective_from, effective_to, price_per_hour, currency "
            "FROM gpu_rates"
        )
    ):
        rates[r.resource_id].append(
            Rate(
                r.resource_id,
                to_us(r.effective_from),
                None if r.effective_to is None else to_us(r.effective_to),
                r.price_per_hour,
                r.currency,
            )
        )
    bills: dict[str, list[Bill]] = defaultdict(list)
    for b in conn.execute(
        text(
            "SELECT line_id, resource_id, period_start, period_end, cost, currency FROM "
            "billing_lines WHERE resource_id IS NOT NULL AND charge_category = ANY(:cats)"
        ),
        {"cats": allocated},
    ):
        bills[b.resource_id].append(
            Bill(
                b.line_id,
                b.resource_id,
                to_us(b.period_start),
                to_us(b.period_end),
                b.cost,
                b.currency,
            )
        )
    rows = conn.execute(
        text(
            "SELECT resource_id, bucket_start, bucket_seconds, currency, sum(amount) AS amount, "
            "bool_or(cost_basis = 'billed') AS billed FROM ledger_entries "
            "GROUP BY resource_id, bucket_start, bucket_seconds, currency"
        )
    )
    problems = []
    totals: dict[tuple[str, int, int], dict[str, Decimal]] = defaultdict(dict)
    for r in rows:
        totals[(r.resource_id, to_us(r.bucket_start), r.bucket_seconds)][r.currency] = r.amount
    billed = 0
    for (resource, b0, width), amounts in sorted(totals.items()):
        b1 = b0 + width * 1_000_000
        res_bills = [x for x in bills.get(resource, []) if x.start_us < b1 and x.end_us > b0]
        cost = bucket_cost(rates.get(resource, []), res_bills, b0, b1, settings.default_currency)
        billed += cost.basis == "billed"
        want = {c: a for c, a in cost.amounts.items() if a != 0}
        got = {c: a for c, a in amounts.items() if a != 0}
        if want != got:
            problems.append(f"{resource} bucket {b0 // 1_000_000}: ledger {got}, cost {want}")
    return Check(
        "bucket entries sum to the bucket's current cost",
        not problems,
        f"{len(totals)} buckets checked, {billed} of them billed",
        problems,
    )


def _billed_lines_reflected(conn: Connection, allocated: list[str]) -> Check:
    """Every bucket an allocated line of a GPU resource covers is in the ledger (so, with the
    first check, the line's whole cost is: its per-bucket parts telescope to its cost)."""
    rows = conn.execute(
        text("""
        SELECT b.line_id, b.resource_id, b.cost,
               (SELECT count(DISTINCT e.bucket_start) FROM ledger_entries e
                 WHERE e.resource_id = b.resource_id
                   AND e.bucket_start < b.period_end
                   AND e.bucket_start + make_interval(secs => e.bucket_seconds) > b.period_start)
                 AS buckets,
               (SELECT max(e.bucket_seconds) FROM ledger_entries e
                 WHERE e.resource_id = b.resource_id) AS width,
               b.period_start, b.period_end
        FROM billing_lines b
        WHERE b.resource_id IN (SELECT DISTINCT resource_id FROM ledger_entries)
          AND b.charge_category = ANY(:cats) AND b.period_end > b.period_start
    """),
        {"cats": allocated},
    ).all()
    problems = []
    for r in rows:
        w = r.width * 1_000_000
        first = to_us(r.period_start) // w
        last = (to_us(r.period_end) - 1) // w
        if r.buckets != last - first + 1:
            problems.append(
                f"line {r.line_id} of {r.resource_id} covers {last - first + 1} "
                f"buckets, the ledger has {r.buckets} of them"
            )
    return Check(
        "billed lines of GPU resources cover only buckets in the ledger",
        not problems,
        f"{len(rows)} allocated lines of GPU resources",
        problems,
    )


def _no_event_twice(conn: Connection) -> Check:
    rows = conn.execute(
        text(
            "SELECT event_id, count(*) AS n FROM counted_events "
            "GROUP BY event_id HAVING count(*) > 1"
        )
    ).all()
    total = conn.execute(text("SELECT count(*) FROM counted_events")).scalar_one()
    return Check(
        "no event_id is counted twice",
        not rows,
        f"{total} counted events",
        [f"{r.event_id} counted {r.n} times" for r in rows[:50]],
    )


def _completions(conn: Connection) -> Check:
    ledger = conn.execute(
        text(
            "SELECT coalesce(sum(completions), 0), coalesce(sum(failed_requests), 0) "
            "FROM ledger_entries"
        )
    ).one()
    events = conn.execute(
        text(
            "SELECT count(DISTINCT event_id) FILTER (WHERE status = 'ok'), "
            "count(DISTINCT event_id) FILTER (WHERE status <> 'ok') FROM counted_events"
        )
    ).one()
    ok = tuple(ledger) == tuple(events)
    detail = (
        f"ledger: {ledger[0]} completions, {ledger[1]} failed; distinct events: "
        f"{events[0]} ok, {events[1]} not ok"
    )
    return Check(
        "completions in the ledger equal distinct ok events", ok, detail, [] if ok else [detail]
    )


DAILY_TRIGGER = "ledger_entries_daily"

# a trigger guards when it fires in an ordinary session ('O' origin, 'A' always: not 'D'
# disabled, nor 'R', which fires only under session_replication_role = replica) and calls the
# function it was made with
GUARDING = """NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
    AND t.tgfoid = to_regproc(CASE t.tgname WHEN 'ledger_entries_daily' THEN 'ledger_daily_add'
                                            ELSE 'ledger_entries_refuse_change' END)"""

UNGUARDED_PARTITIONS = f"""
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'ledger_entries'::regclass
      AND (SELECT count(*) FROM pg_trigger t
           WHERE t.tgrelid = c.oid AND {GUARDING}
             AND t.tgname IN ('ledger_entries_no_update_delete', 'ledger_entries_no_truncate')
          ) < 2
    ORDER BY 1
"""

# a month partition detached (its rows gone from the journal and the views alike) is still a
# table of the ledger's name
DETACHED_PARTITIONS = """
    SELECT c.relname FROM pg_class c
    WHERE c.relnamespace = (SELECT relnamespace FROM pg_class
                            WHERE oid = 'ledger_entries'::regclass)
      AND c.relkind IN ('r', 'p')
      AND c.relname ~ '^ledger_entries_(y[0-9]{4}m[0-9]{2}|default)$'
      AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                      WHERE i.inhrelid = c.oid AND i.inhparent = 'ledger_entries'::regclass)
    ORDER BY 1
"""

# the primary key is (entry_id, bucket_start), as partitioning requires: an id names its bucket,
# so an id twice means two buckets claimed it
REPEATED_IDS = """
    SELECT entry_id FROM ledger_entries GROUP BY entry_id HAVING count(*) > 1 LIMIT 50
"""

# ledger_daily recomputed from the journal, compared row by row (every column)
ROLLUP_DIFF = f"""
    WITH journal AS (
        SELECT {DAILY_SUMS} FROM ledger_entries GROUP BY 1, 2, 3, 4, 5
    )
    SELECT coalesce(j.day, d.day) AS day, coalesce(j.resource_id, d.resource_id) AS resource_id,
           coalesce(j.tenant_id, d.tenant_id) AS tenant_id, coalesce(j.model, d.model) AS model,
           coalesce(j.currency, d.currency) AS currency, j.amount AS journal_amount,
           d.amount AS rollup_amount
    FROM journal j
    FULL JOIN ledger_daily d
      ON d.day = j.day AND d.resource_id = j.resource_id AND d.currency = j.currency
     AND d.tenant_id IS NOT DISTINCT FROM j.tenant_id AND d.model IS NOT DISTINCT FROM j.model
    WHERE (j.entries, j.unpriced_entries, j.billed_entries, j.completions, j.failed_requests,
           j.prompt_tokens, j.cached_prompt_tokens, j.completion_tokens, j.work_units,
           j.busy_seconds, j.amount, j.completions_within_slo, j.cancelled_requests,
           j.slo_miss_amount, j.failed_amount, j.cancelled_amount)
          IS DISTINCT FROM
          (d.entries, d.unpriced_entries, d.billed_entries, d.completions, d.failed_requests,
           d.prompt_tokens, d.cached_prompt_tokens, d.completion_tokens, d.work_units,
           d.busy_seconds, d.amount, d.completions_within_slo, d.cancelled_requests,
           d.slo_miss_amount, d.failed_amount, d.cancelled_amount)
    ORDER BY 1, 2, 3, 4, 5
    LIMIT 50
"""


def _rollup_agrees(conn: Connection) -> Check:
    """The daily rollup the per-day views read (ledger_daily) is the journal's, exactly."""
    rows = conn.execute(text(ROLLUP_DIFF)).all()
    problems = [
        f"ledger_daily {r.day} {r.resource_id} {r.tenant_id or '(idle)'} {r.model} "
        f"{r.currency}: journal {r.journal_amount}, rollup {r.rollup_amount}"
        for r in rows
    ]
    groups = conn.execute(text("SELECT count(*) FROM ledger_daily")).scalar_one()
    return Check(
        "the daily rollup (ledger_daily) equals the journal",
        not problems,
        f"{groups} day groups compared",
        problems,
    )


def _rows_unchanged(conn: Connection) -> Check:
    triggers = (
        conn.execute(
            text(
                f"SELECT tgname FROM pg_trigger t WHERE tgrelid = 'ledger_entries'::regclass "
                f"AND {GUARDING}"
            )
        )
        .scalars()
        .all()
    )
    problems = [
        f"trigger {t} is missing, disabled or not calling its function"
        for t in ("ledger_entries_no_update_delete", "ledger_entries_no_truncate", DAILY_TRIGGER)
        if t not in triggers
    ]
    # each month partition refuses UPDATE, DELETE and TRUNCATE on its own too
    problems += [
        f"partition {p} lacks its append-only triggers"
        for p in conn.execute(text(UNGUARDED_PARTITIONS)).scalars()
    ]
    problems += [
        f"table {p} is not a partition of ledger_entries"
        for p in conn.execute(text(DETACHED_PARTITIONS)).scalars()
    ]
    problems += [
        f"entry id {e} is in the ledger more than once"
        for e in conn.execute(text(REPEATED_IDS)).scalars()
    ]
    changed = (
        conn.execute(
            text(
                "SELECT entry_id FROM ledger_entries "
                f"WHERE row_hash <> '' AND row_hash <> {ROW_HASH_SQL}"
            )
        )
        .scalars()
        .all()
    )
    problems += [f"entry {e} differs from what was written" for e in changed[:50]]
    unhashed = conn.execute(
        text("SELECT count(*) FROM ledger_entries WHERE row_hash = ''")
    ).scalar_one()
    total = conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one()
    detail = f"{total} rows hashed and checked"
    if unhashed:
        detail += f" ({unhashed} written before row hashes existed)"
    return Check("no row of ledger_entries was changed", not problems, detail, problems)
