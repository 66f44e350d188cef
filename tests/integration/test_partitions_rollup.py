"""Migration 0008: ledger_entries partitioned by month, the daily rollup ledger_daily kept in the
inserting transaction, and the per-day views that read it.

- The rollup views give exactly what the journal versions (migrations 0001, 0006, 0007) give,
  on random ledgers spread over months, written in batches with re-deliveries.
- Concurrent writers leave the rollup exact.
- Rows go to their month's partition; a month without one goes to the default partition, and
  a partition is never created over rows the default holds.
- Each partition stays append-only, and the audit fails when the rollup and the journal
  disagree, when a partition lost its triggers or when an entry id is in two partitions."""

from __future__ import annotations

import importlib.util
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from services.accounting.model import AccountingSettings
from services.ledger.audit import run_audit
from services.ledger.db import ENTRY_COLUMNS, write_batch
from services.ledger.hashing import entry_values
from services.ledger.writer import Batch  # the writer's own batch

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
START = datetime(2026, 1, 30, tzinfo=UTC)


def migration(prefix: str) -> ModuleType:
    (path,) = VERSIONS.glob(f"{prefix}_*.py")
    spec = importlib.util.spec_from_file_location(f"m{prefix}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def journal_views(conn: Any) -> None:
    """The journal versions of the per-day views, as temporary views j_*."""
    m1, m6, m7 = migration("0001"), migration("0006"), migration("0007")
    for sql in (
        m1.V_COST_PER_COMPLETION,
        m6.V_TENANT_IDLE_SHARE,
        m7.V_TENANT_SPEND,
        m7.V_COST_PER_COMPLETION_WITH_IDLE,
    ):
        sql = sql.replace("CREATE VIEW v_", "CREATE TEMP VIEW j_")
        conn.execute(text(sql.replace("FROM v_tenant_idle_share", "FROM j_tenant_idle_share")))
    # goodput and waste (0011): the same views over the journal grouped as the rollup groups it
    m11 = migration("0011")
    grouped = f"FROM (SELECT {m11.DAILY_SUMS} FROM ledger_entries GROUP BY 1, 2, 3, 4, 5) daily"
    for sql in (m11.V_GOODPUT, m11.V_WASTE):
        sql = sql.replace("CREATE VIEW v_", "CREATE TEMP VIEW j_")
        sql = sql.replace(" WITH (security_invoker = true)", "")
        conn.execute(text(sql.replace("FROM ledger_daily", grouped)))


def row(
    kind: str, tenant: str | None, model: str | None, resource: str, at: datetime,
    amount: Decimal, currency: str = "USD", completions: int = 0, basis: str = "provisional",
    entry_id: str | None = None, prompt_tokens: int | None = None,
) -> tuple[Any, ...]:  # fmt: skip
    """A writer's COPY row (ENTRY_COLUMNS, row hash last)."""
    values: dict[str, Any] = {
        "entry_id": entry_id or uuid.uuid4().hex, "entry_kind": kind, "cost_basis": basis,
        "tenant_id": tenant, "model": model, "resource_id": resource, "bucket_start": at,
        "bucket_seconds": 60, "completions": completions, "failed_requests": completions % 2,
        "prompt_tokens": 100 * completions if prompt_tokens is None else prompt_tokens,
        "cached_prompt_tokens": 7 * completions,
        "completion_tokens": 20 * completions, "work_units": Decimal("1.5") * completions,
        "busy_seconds": Decimal("0.25") * completions, "amount": amount, "currency": currency,
        "billing_line_ids": [],
        # goodput and waste (migration 0011): parts of the counts and of the amount
        "completions_within_slo": completions // 2,
        "cancelled_requests": completions % 2 if completions % 4 == 1 else 0,
        "slo_miss_amount": (amount / 4).quantize(Decimal("1e-12")),
        "failed_amount": (amount / 8).quantize(Decimal("1e-12")),
        "cancelled_amount": (amount / 16).quantize(Decimal("1e-12")),
    }  # fmt: skip
    return entry_values(*(values[c] for c in ENTRY_COLUMNS[:-1]))


def random_rows(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    rows = []
    for _ in range(n):
        at = START + timedelta(minutes=rng.randint(0, 60 * 24 * 70))  # Jan 30 .. Apr 10
        resource = f"node-{rng.randint(1, 4)}"
        currency = rng.choice(["USD", "USD", "EUR"])
        amount = Decimal(rng.randint(-(10**11), 10**12)) * Decimal("1e-12")
        if rng.random() < 0.3:
            rows.append(row("idle", None, None, resource, at, abs(amount), currency))
        else:
            kind = rng.choice(["usage", "usage", "late_adjustment", "reconciliation"])
            basis = rng.choice(["provisional", "provisional", "billed", "unpriced"])
            rows.append(row(kind, rng.choice("abc"), rng.choice(["m1", "m2"]), resource, at,
                            amount, currency, rng.randint(0, 5), basis))  # fmt: skip
    return rows


def fetch(engine: Any, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def audit_check(engine: Any, name: str) -> Any:
    (check,) = [c for c in run_audit(engine, AccountingSettings(), []) if c.name == name]
    return check


ROLLUP = "the daily rollup (ledger_daily) equals the journal"
UNCHANGED = "no row of ledger_entries was changed"


def test_the_rollup_views_answer_what_the_journal_views_answer(db_url):
    rng = random.Random(16)
    rows = random_rows(rng, 1500)
    engine = create_engine(db_url)
    # in batches, each re-delivered in part with the next (what a restarted writer does)
    for i in range(0, len(rows), 200):
        write_batch(engine, "g", Batch(entries=rows[max(0, i - 50) : i + 200]))
    write_batch(engine, "g", Batch(entries=rows[:300]))  # a whole re-delivery adds nothing
    with engine.connect() as conn:
        journal_views(conn)
        for view, order in (
            ("cost_per_completion", "day, tenant_id, model, currency"),
            ("tenant_idle_share", "day, resource_id, tenant_id, currency"),
            ("tenant_spend", "day, tenant_id, currency"),
            ("cost_per_completion_with_idle", "day, tenant_id, model, currency"),
            ("goodput", "day, tenant_id, model, currency"),
            ("waste", "day, tenant_id, model, resource_id, currency"),
        ):
            got = conn.execute(text(f"SELECT * FROM v_{view} ORDER BY {order}")).all()
            want = conn.execute(text(f"SELECT * FROM j_{view} ORDER BY {order}")).all()
            assert len(got) > 50
            assert [tuple(r) for r in got] == [tuple(r) for r in want], view
            # the same digits, not only equal numbers
            assert [str(v) for r in got for v in r] == [str(v) for r in want for v in r], view
    assert fetch(engine, "SELECT count(*) FROM ledger_entries") == [(len(rows),)]
    assert audit_check(engine, ROLLUP).ok
    engine.dispose()


def test_concurrent_writers_keep_the_rollup_exact(db_url):
    rng = random.Random(7)
    rows = random_rows(rng, 2000)
    engine = create_engine(db_url, pool_size=4)
    errors: list[BaseException] = []

    def writer(part: list[tuple[Any, ...]]) -> None:
        try:
            for i in range(0, len(part), 100):
                write_batch(engine, "g", Batch(entries=part[i : i + 100]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    # three writers over overlapping rows (the same day groups, and the same entries twice)
    parts = [rows[:1200], rows[800:], rows[::3]]
    threads = [threading.Thread(target=writer, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fetch(engine, "SELECT count(*) FROM ledger_entries") == [(len(rows),)]
    check = audit_check(engine, ROLLUP)
    assert check.ok, check.problems
    engine.dispose()


def partition_of(engine: Any, entry_id: str) -> str:
    sql = f"SELECT tableoid::regclass::text FROM ledger_entries WHERE entry_id = '{entry_id}'"
    return fetch(engine, sql)[0][0]


def test_rows_go_to_their_month_and_a_partition_never_hides_rows(db_url):
    engine = create_engine(db_url)
    march = row("idle", None, None, "n", datetime(2026, 3, 31, 23, 59, tzinfo=UTC), Decimal(1))
    april = row("idle", None, None, "n", datetime(2026, 4, 1, tzinfo=UTC), Decimal(2))
    write_batch(engine, "g", Batch(entries=[march, april]))
    assert partition_of(engine, march[0]) == "ledger_entries_y2026m03"
    assert partition_of(engine, april[0]) == "ledger_entries_y2026m04"
    # written by hand, with no partition for its month: the default partition takes it ...
    with engine.begin() as conn:
        conn.execute(
            text("""INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis,
                             resource_id, bucket_start, bucket_seconds, amount, currency)
                             VALUES ('by-hand', 'idle', 'provisional', 'n',
                                     '2019-06-15T00:00:00Z', 60, 5, 'USD')""")
        )
    assert partition_of(engine, "by-hand") == "ledger_entries_default"
    # ... and June 2019 then stays there: no partition is made over it
    with engine.begin() as conn:
        made = conn.execute(text("SELECT inferledger_ledger_partition('2019-06-01')"))
        assert made.scalar_one() == "ledger_entries_default"
    # a wrong clock: years ahead, or decades back, make no partition either
    with engine.begin() as conn:
        for month in ("2099-01-01", "1970-01-01"):
            made = conn.execute(text("SELECT inferledger_ledger_partition(:m)"), {"m": month})
            assert made.scalar_one() == "ledger_entries_default"
    june = row("idle", None, None, "n", datetime(2019, 6, 20, tzinfo=UTC), Decimal(3))
    write_batch(engine, "g", Batch(entries=[june]))
    assert partition_of(engine, june[0]) == "ledger_entries_default"
    assert audit_check(engine, ROLLUP).ok
    assert audit_check(engine, UNCHANGED).ok
    engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries_y2026m03 SET amount = 0",
        "DELETE FROM ledger_entries_y2026m03",
        "TRUNCATE ledger_entries_y2026m03",
        "TRUNCATE ledger_entries_default",
        "TRUNCATE ledger_entries",
    ],
)
def test_every_partition_is_append_only(db_url, statement):
    engine = create_engine(db_url)
    write_batch(engine, "g", Batch(entries=[row("idle", None, None, "n", START.replace(month=3),
                                                Decimal(1))]))  # fmt: skip
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    assert fetch(engine, "SELECT count(*) FROM ledger_entries") == [(1,)]
    engine.dispose()


def test_the_audit_fails_when_rollup_and_journal_disagree(db_url):
    engine = create_engine(db_url)
    rows = random_rows(random.Random(3), 300)
    write_batch(engine, "g", Batch(entries=rows))
    assert audit_check(engine, ROLLUP).ok
    # a row written into a partition directly: the parent's trigger never saw it
    first = fetch(engine, "SELECT min(bucket_start) FROM ledger_entries")[0][0]
    month = f"ledger_entries_y{first:%Y}m{first:%m}"
    with engine.begin() as conn:
        conn.execute(text(f"""INSERT INTO {month} (entry_id, entry_kind, cost_basis, resource_id,
                              bucket_start, bucket_seconds, amount, currency)
                              VALUES ('sideways', 'idle', 'provisional', 'node-9', :at, 60, 1,
                                      'USD')"""), {"at": first})  # fmt: skip
    check = audit_check(engine, ROLLUP)
    assert not check.ok and "node-9 (idle)" in check.problems[0]
    engine.dispose()


def test_the_audit_fails_on_a_changed_rollup_a_bare_partition_or_an_id_twice(db_url):
    engine = create_engine(db_url)
    twice = uuid.uuid4().hex
    rows = [
        row("usage", "a", "m", "n", datetime(2026, 3, 2, tzinfo=UTC), Decimal(1), entry_id=twice),
        row("usage", "a", "m", "n", datetime(2026, 4, 2, tzinfo=UTC), Decimal(1), entry_id=twice),
    ]
    write_batch(engine, "g", Batch(entries=rows))
    check = audit_check(engine, UNCHANGED)
    assert not check.ok and f"entry id {twice} is in the ledger more than once" in check.problems
    with engine.begin() as conn:  # the table's owner can do what nobody else may
        conn.execute(text("UPDATE ledger_daily SET amount = amount + 1e-12 WHERE tenant_id = 'a'"))
        conn.execute(text("DROP TRIGGER ledger_entries_no_truncate ON ledger_entries_y2026m04"))
    check = audit_check(engine, ROLLUP)
    assert not check.ok and len(check.problems) == 2
    check = audit_check(engine, UNCHANGED)
    assert "partition ledger_entries_y2026m04 lacks its append-only triggers" in check.problems
    engine.dispose()


def test_the_budget_spend_function_answers_as_before(db_url):
    """0008's inferledger_budget_spend against 0006's, on a random ledger: tenant budgets with
    and without the idle share, all-tenants budgets, whole-day and partial windows."""
    engine = create_engine(db_url)
    rows = random_rows(random.Random(5), 1500)
    write_batch(engine, "g", Batch(entries=rows))
    old = migration("0006").BUDGET_SPEND.replace("inferledger_budget_spend", "j_budget_spend")
    budgets = [
        (f"{who or 'all'}-{currency}-{idle}", who, currency, idle)
        for who in ("a", "b", None)
        for currency in ("USD", "EUR")
        for idle in (False, True)
    ]
    rng = random.Random(9)
    windows = [(START, START + timedelta(days=70))] + [
        (start, start + timedelta(hours=rng.choice([1, 5, 24, 24 * 7, 24 * 31])))
        for start in (START + timedelta(hours=rng.randint(0, 24 * 70)) for _ in range(12))
    ] + [(START.replace(day=31, hour=0), START.replace(month=3, day=1, hour=0))]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text(old))
        for budget_id, who, currency, idle in budgets:
            conn.execute(
                text("""INSERT INTO budgets (budget_id, name, tenant_id, period, amount,
                        currency, include_idle_share) VALUES (:id, :name, :who, 'month', 100,
                        :currency, :idle)"""),
                {
                    "id": budget_id,
                    "name": budget_id,
                    "who": who,
                    "currency": currency,
                    "idle": idle,
                },
            )
        compared = 0
        for budget_id, *_ in budgets:
            for start, end in windows:
                args = {"b": budget_id, "f": start, "t": end}
                got = conn.execute(text("SELECT inferledger_budget_spend(:b, :f, :t)"), args)
                want = conn.execute(text("SELECT j_budget_spend(:b, :f, :t)"), args)
                g, w = got.scalar_one(), want.scalar_one()
                assert str(g) == str(w), (budget_id, start, end)
                compared += g != 0
    assert compared > 100  # most windows hold spend
    engine.dispose()


def test_gpu_utilization_hours_are_utc_hours_in_any_session_time_zone(db_url):
    engine = create_engine(db_url)
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    write_batch(engine, "g", Batch(entries=[
        row("idle", None, None, "n", at + timedelta(minutes=m), Decimal(1)) for m in (0, 20, 40)
    ]))  # fmt: skip
    for zone in ("UTC", "Asia/Kolkata", "America/St_Johns"):
        with engine.connect() as conn:
            conn.execute(text(f"SET TimeZone = '{zone}'"))
            rows = conn.execute(text("SELECT hour, buckets, cost FROM v_gpu_utilization")).all()
        assert [(r.hour.astimezone(UTC), r.buckets, r.cost) for r in rows] == [
            (at, 3, Decimal(3))
        ], zone


INT8_MAX = 2**63 - 1


def test_token_sums_beyond_bigint_are_taken_as_the_journal_takes_them(db_url):
    """The contract lets an entry carry up to INT8_MAX tokens per count, and the journal takes
    any number of them (sum(bigint) is numeric): the rollup must not refuse their sum, or the
    writer dead-letters the entries (their money with them) the journal would have kept."""
    engine = create_engine(db_url)
    at = datetime(2026, 3, 2, tzinfo=UTC)
    rows = [row("usage", "a", "m", "n", at, Decimal(1), completions=1, prompt_tokens=INT8_MAX)
            for _ in range(3)]  # fmt: skip
    write_batch(engine, "g", Batch(entries=rows[:2]))  # a sum in one statement
    write_batch(engine, "g", Batch(entries=rows[2:]))  # added to the day's row
    assert fetch(engine, "SELECT count(*), sum(amount) FROM ledger_entries") == [(3, 3)]
    assert fetch(engine, "SELECT prompt_tokens FROM ledger_daily") == [(3 * INT8_MAX,)]
    check = audit_check(engine, ROLLUP)
    assert check.ok, check.problems
    engine.dispose()


@pytest.fixture
def intruder(db_url):
    """A login role with no rights but the defaults (TEMP, EXECUTE on functions), dropped
    after the test with what it owns."""
    name = f"il_test_intruder_{uuid.uuid4().hex[:8]}"
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {name}"))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {name}"))
            conn.execute(text(f"DROP ROLE {name}"))
        engine.dispose()


def test_nobody_but_the_ledger_can_add_to_the_rollup(db_url, intruder):
    """ledger_daily_add runs as the owner: a role's own table (a temporary one needs no grant)
    with a trigger calling it must not write the role's numbers into the rollup."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        conn.execute(text(f"SET ROLE {intruder}"))
        conn.execute(
            text("""CREATE TEMP TABLE fake AS SELECT * FROM (VALUES
            (timestamptz '2026-03-02Z', 'n', 'a', 'm', 'USD', 'billed', 0, 0, 0::bigint,
             0::bigint, 0::bigint, 0::numeric, 0::numeric, -1000000::numeric))
            AS v (bucket_start, resource_id, tenant_id, model, currency, cost_basis,
                  completions, failed_requests, prompt_tokens, cached_prompt_tokens,
                  completion_tokens, work_units, busy_seconds, amount) WHERE false""")
        )
        with pytest.raises(DBAPIError):
            conn.execute(
                text("""CREATE TRIGGER t AFTER INSERT ON fake
                                 REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT
                                 EXECUTE FUNCTION ledger_daily_add()""")
            )
            conn.execute(
                text("""INSERT INTO fake VALUES ('2026-03-02Z', 'n', 'a', 'm', 'USD',
                                 'billed', 0, 0, 0, 0, 0, 0, 0, -1000000)""")
            )
        conn.rollback()
    assert fetch(engine, "SELECT count(*) FROM ledger_daily") == [(0,)]
    # a writer (no privilege on ledger_daily: migration 0009) still adds to the rollup
    # through the trigger
    with engine.begin() as conn:
        conn.execute(text(f"GRANT inferledger_writer TO {intruder}"))
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL ROLE {intruder}"))
        conn.execute(
            text("""INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis,
                             resource_id, bucket_start, bucket_seconds, amount, currency)
                             VALUES ('w', 'idle', 'provisional', 'n', '2026-03-02Z', 60, 5,
                                     'USD')""")
        )
    assert fetch(engine, "SELECT entries, amount FROM ledger_daily") == [(1, 5)]
    engine.dispose()


def test_the_owners_functions_run_only_the_catalogs_and_the_ledgers_objects(db_url, intruder):
    """The SECURITY DEFINER functions must not call what a role that can create in the schema
    put there (a function of the same name and arguments as a built-in one they call: it would
    run with the owner's rights), nor read or write a temporary table of the caller's."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"GRANT CREATE ON SCHEMA public TO {intruder}"))
        conn.execute(text(f"SET LOCAL ROLE {intruder}"))
        for signature in ("to_char(date, text)", "pg_advisory_xact_lock(integer)",
                          "timezone(text, timestamptz)"):  # fmt: skip
            conn.execute(
                text(f"""CREATE FUNCTION public.{signature} RETURNS text
                                  LANGUAGE plpgsql AS $$ BEGIN
                                  RAISE 'hijacked: runs as %', current_user; END $$""")
            )
    month = (datetime.now(UTC).replace(day=1) - timedelta(days=100)).replace(day=1).date()
    with engine.begin() as conn:
        made = conn.execute(text("SELECT inferledger_ledger_partition(:m)"), {"m": month})
        assert made.scalar_one() == f"ledger_entries_y{month:%Y}m{month:%m}"
    with engine.begin() as conn:
        # the caller's temporary tables named as the ledger's
        conn.execute(
            text("CREATE TEMP TABLE ledger_daily (LIKE public.ledger_daily) ON COMMIT DROP")
        )
        conn.execute(text("CREATE TEMP TABLE ledger_entries_default (x int) ON COMMIT DROP"))
        made = conn.execute(text("SELECT inferledger_ledger_partition('2026-02-01')"))
        assert made.scalar_one() == "ledger_entries_y2026m02"
        conn.execute(
            text("""INSERT INTO public.ledger_entries (entry_id, entry_kind,
                             cost_basis, resource_id, bucket_start, bucket_seconds, amount,
                             currency) VALUES ('w', 'idle', 'provisional', 'n', '2026-02-02Z',
                             60, 5, 'USD')""")
        )
        assert conn.execute(text("SELECT count(*) FROM pg_temp.ledger_daily")).scalar() == 0
    assert fetch(engine, "SELECT entries, amount FROM ledger_daily") == [(1, 5)]
    engine.dispose()


@pytest.mark.parametrize(
    "tampering",
    [
        # a REPLICA trigger fires only under session_replication_role = replica: not at all
        "ALTER TABLE ledger_entries_y2026m03 ENABLE REPLICA TRIGGER ledger_entries_no_truncate",
        "ALTER TABLE ledger_entries ENABLE REPLICA TRIGGER ledger_entries_no_update_delete",
        "ALTER TABLE ledger_entries ENABLE REPLICA TRIGGER ledger_entries_daily",
        # the name kept, the refusal gone
        """CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
           DROP TRIGGER ledger_entries_no_truncate ON ledger_entries_y2026m03;
           CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries_y2026m03
           FOR EACH STATEMENT EXECUTE FUNCTION noop()""",
    ],
)
def test_the_audit_sees_triggers_that_no_longer_guard(db_url, tampering):
    engine = create_engine(db_url)
    at = datetime(2026, 3, 2, tzinfo=UTC)
    write_batch(engine, "g", Batch(entries=[row("idle", None, None, "n", at, Decimal(1))]))
    assert audit_check(engine, UNCHANGED).ok
    with engine.begin() as conn:
        conn.execute(text(tampering))
    check = audit_check(engine, UNCHANGED)
    assert not check.ok
    engine.dispose()


def test_the_audit_sees_a_detached_partition(db_url):
    """Detaching a month takes its rows out of the journal and the views alike; the table is
    still there to be noticed, even once the rollup was made to agree."""
    engine = create_engine(db_url)
    rows = [row("idle", None, None, "n", datetime(2026, m, 2, tzinfo=UTC), Decimal(m))
            for m in (3, 4)]  # fmt: skip
    write_batch(engine, "g", Batch(entries=rows))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ledger_entries DETACH PARTITION ledger_entries_y2026m03"))
    assert not audit_check(engine, ROLLUP).ok  # the rollup still holds March
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_daily WHERE day < '2026-04-01'"))
    assert audit_check(engine, ROLLUP).ok
    check = audit_check(engine, UNCHANGED)
    assert "table ledger_entries_y2026m03 is not a partition of ledger_entries" in check.problems
    engine.dispose()


def test_making_a_partition_waits_briefly_behind_a_long_reader(db_url):
    """Creating a partition takes an ACCESS EXCLUSIVE lock on ledger_entries: queued behind a
    long reader (an audit, a report), it would hold up every writer and reader of the table
    until that reader ends. It gives up after a moment instead (the writer retries)."""
    engine = create_engine(db_url, pool_size=3)
    month = (datetime.now(UTC).replace(day=1) - timedelta(days=70)).replace(day=1).date()
    with engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM ledger_entries"))  # its lock held till rollback
        started = datetime.now(UTC)
        with pytest.raises(DBAPIError, match="lock timeout"), engine.begin() as conn:
            conn.execute(text("SET LOCAL statement_timeout = '15s'"))  # (rather than hang)
            conn.execute(text("SELECT inferledger_ledger_partition(:m)"), {"m": month})
        assert datetime.now(UTC) - started < timedelta(seconds=10)
        reader.rollback()
    with engine.begin() as conn:
        made = conn.execute(text("SELECT inferledger_ledger_partition(:m)"), {"m": month})
        assert made.scalar_one() == f"ledger_entries_y{month:%Y}m{month:%m}"
    engine.dispose()
