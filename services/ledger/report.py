"""Reading the ledger back: ``inferledger report`` (cost per completion, grouped by period,
tenant, model or resource, with or without the idle share), the demo's tables, and tables
rendered to fit the terminal."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

# the report's rounding, re-exported (explicitly: `import X as X`)
from services.ledger.rounding import MINOR_UNITS as MINOR_UNITS
from services.ledger.rounding import UNIT_COST_DIGITS as UNIT_COST_DIGITS
from services.ledger.rounding import minor_units as minor_units
from services.ledger.rounding import round_money as round_money
from services.ledger.rounding import round_unit_cost as round_unit_cost

# -- inferledger report: what to group by, where it is read from ----------------------------

PERIODS = ("day", "week", "month")
GROUPINGS = ("day", "week", "month", "tenant", "model", "resource")
_KEY_COLUMN = {"tenant": "tenant_id", "model": "model", "resource": "resource_id"}
# a UTC calendar period of a `day` (a date): `day::timestamp` has no time zone, so neither has
# date_trunc (on a date it would take the timestamptz variant and the session's time zone)
_PERIOD_SQL = {
    "day": "day",
    "week": "date_trunc('week', day::timestamp)::date",  # ISO weeks: Monday
    "month": "date_trunc('month', day::timestamp)::date",
}
PLAIN_VIEW = "v_cost_per_completion"
IDLE_VIEW = "v_cost_per_completion_with_idle"
JOURNAL = "ledger_daily"
UNSHARED_IDLE = "(unshared idle)"
"""How the table labels the rows of idle cost that no tenant used (tenant_id and model null)."""

COUNT_COLUMNS = ("completions", "failed_requests", "prompt_tokens", "completion_tokens")
MONEY_COLUMNS = ("amount", "idle_share", "amount_with_idle")
UNIT_COST_COLUMNS = (
    "cost_per_completion",
    "cost_per_1k_tokens",
    "cost_per_completion_with_idle",
    "cost_per_1k_tokens_with_idle",
)


class ReportError(ValueError):
    """Options that the report cannot answer (the CLI shows the message as a one-line error)."""


@dataclass(frozen=True)
class ReportSpec:
    """What ``inferledger report`` was asked: ``keys`` are the row's key columns in order
    (currency always follows them), the rest are filters; ``until`` is exclusive."""

    keys: tuple[str, ...] = ("tenant_id", "model")
    tenant: str | None = None
    model: str | None = None
    since: date | None = None
    until: date | None = None
    include_idle_share: bool = False

    @property
    def source(self) -> str:
        """What the rows are read from: the journal when grouped by resource (the views have
        no resource), else the view with or without the idle share."""
        if "resource_id" in self.keys:
            return JOURNAL
        return IDLE_VIEW if self.include_idle_share else PLAIN_VIEW


def group_keys(group_by: Iterable[str] = ()) -> tuple[str, ...]:
    """The row's key columns from ``--group-by`` values (repeated, or comma-separated, or
    both), in the order given, each once: ``day``, ``week`` or ``month`` (at most one) become
    that column, holding the period's first day; ``tenant``, ``model`` and ``resource`` become
    ``tenant_id``, ``model`` and ``resource_id``. A period alone is per tenant and model too,
    and nothing at all is per tenant and model."""
    chosen: list[str] = []
    for value in group_by:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in GROUPINGS:
                raise ReportError(
                    f"cannot group by {part.strip()!r}: choose from {', '.join(GROUPINGS)}"
                )
            if name not in chosen:
                chosen.append(name)
    periods = [g for g in chosen if g in PERIODS]
    if len(periods) > 1:
        raise ReportError(f"group by one period at a time, not {' and '.join(periods)}")
    keys = [_KEY_COLUMN.get(g, g) for g in chosen]
    if keys == periods:
        keys += ["tenant_id", "model"]
    return tuple(keys)


def report_spec(
    group_by: Iterable[str] = (),
    tenant: str | None = None,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
    include_idle_share: bool = False,
) -> ReportSpec:
    """The options of ``inferledger report``, checked: a :class:`ReportError` says what is
    wrong with them."""
    keys = group_keys(group_by)
    if since is not None and until is not None and until <= since:
        raise ReportError(f"--until {until} is not after --since {since} (until is exclusive)")
    if include_idle_share and "resource_id" in keys:
        raise ReportError(
            "--include-idle-share cannot be grouped by resource: the idle share is computed "
            f"per tenant and model in {IDLE_VIEW}, which has no resource (per resource and "
            "tenant, v_tenant_idle_share has it; see docs/report.md)"
        )
    return ReportSpec(keys, tenant, model, since, until, include_idle_share)


@dataclass
class Report:
    """The rows of a report (full precision: ``Decimal`` amounts, ``date`` periods), their
    columns in order, and the first and last UTC day the rows cover (None without rows)."""

    spec: ReportSpec
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_day: date | None = None
    last_day: date | None = None


_SUMS = """
       sum(completions)::bigint AS completions,
       sum(failed_requests)::bigint AS failed_requests,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(amount) AS amount,
       round(sum(amount) / nullif(sum(completions), 0), 12) AS cost_per_completion,
       round(sum(amount) * 1000 / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
           AS cost_per_1k_tokens,
       bool_or(has_unpriced) AS has_unpriced"""
_IDLE_SUMS = """,
       sum(idle_share) AS idle_share,
       sum(amount_with_idle) AS amount_with_idle,
       round(sum(amount_with_idle) / nullif(sum(completions), 0), 12)
           AS cost_per_completion_with_idle,
       round(sum(amount_with_idle) * 1000 / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
           AS cost_per_1k_tokens_with_idle,
       unshared_idle"""
# v_cost_per_completion's rows with the resource: the daily rollup of the journal (migration
# 0008), the same arithmetic over the same entries (the tenants', every kind), per resource.
_JOURNAL_ROWS = """(
    SELECT day, tenant_id, model, resource_id, currency, completions, failed_requests,
           prompt_tokens, completion_tokens, amount, unpriced_entries > 0 AS has_unpriced
    FROM ledger_daily
    WHERE {where}
) AS journal"""
_FIRST_LAST = "min(day) AS first_day, max(day) AS last_day"


def report_sql(spec: ReportSpec) -> tuple[str, dict[str, Any]]:
    """The query of a report and its parameters. Every sum is of full-precision amounts, and
    the ratios are computed from the sums (rounded to 12 places, as in the views); the rows'
    key columns, the currency and (with the idle share) ``unshared_idle`` are grouped on."""
    params: dict[str, Any] = {}
    where: list[str] = []
    if spec.tenant is not None:
        where.append("tenant_id = :tenant")
        params["tenant"] = spec.tenant
    if spec.model is not None:
        where.append("model = :model")
        params["model"] = spec.model
    if spec.source == JOURNAL:
        inner = ["tenant_id IS NOT NULL", *where]
        if spec.since is not None:
            inner.append("day >= :since")
        if spec.until is not None:
            inner.append("day < :until")
        source, where = _JOURNAL_ROWS.format(where="\n      AND ".join(inner)), []
    else:
        source = spec.source
        if spec.since is not None:
            where.append("day >= :since")
        if spec.until is not None:
            where.append("day < :until")
    if spec.since is not None:
        params["since"] = spec.since
    if spec.until is not None:
        params["until"] = spec.until
    keys = [f"{_PERIOD_SQL[k]} AS {k}" if k in _PERIOD_SQL else k for k in spec.keys]
    idle = spec.source == IDLE_VIEW
    # the keys and currency by position (a period's expression is long), then unshared_idle
    group = ", ".join(str(n) for n in range(1, len(spec.keys) + 2))
    group += ", unshared_idle" if idle else ""
    sql = (
        f"SELECT {', '.join(keys)}, currency,{_SUMS}{_IDLE_SUMS if idle else ''},\n"
        f"       {_FIRST_LAST}\n"
        f"FROM {source}\n"
        + (f"WHERE {' AND '.join(where)}\n" if where else "")
        + f"GROUP BY {group}\n"
        f"ORDER BY {group}"
    )
    return sql, params


def cost_report(engine: Engine, spec: ReportSpec) -> Report:
    """The report's rows: ``spec.source`` summed per key and currency over the chosen days.
    With the idle share, the rows of idle cost no tenant used are rows of their own
    (``unshared_idle`` true, tenant and model null), so that over all rows the amounts with
    idle add up to the ledger's amounts; a tenant or model filter leaves them out."""
    sql, params = report_sql(spec)
    with engine.connect() as conn:
        result = conn.execute(text(sql), params)
        names = result.keys()  # not `in result`: that would read the rows
        columns = [c for c in names if c not in ("first_day", "last_day")]
        found = [dict(r._mapping) for r in result]
    firsts = [r.pop("first_day") for r in found]
    lasts = [r.pop("last_day") for r in found]
    return Report(spec, columns, found, min(firsts, default=None), max(lasts, default=None))


def cost_per_completion(
    engine: Engine, tenant: str | None = None, since: date | None = None, until: date | None = None
) -> list[dict[str, Any]]:
    """The demo's table: ``v_cost_per_completion`` summed over the chosen days, per tenant and
    model (the report's default rows, without the unpriced flag: the demo prices everything)."""
    rows = cost_report(engine, ReportSpec(tenant=tenant, since=since, until=until)).rows
    return [{k: v for k, v in r.items() if k != "has_unpriced"} for r in rows]


# -- inferledger report: how the table shows it ---------------------------------------------


def table_rows(report: Report) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows as the table shows them, and which of its columns are numbers (right-aligned):
    amounts rounded to the currency's minor unit, costs per unit to 6 significant digits,
    ``has_unpriced`` as an ``unpriced`` column saying ``yes``, the unshared idle labelled
    ``(unshared idle)`` (its ``unshared_idle`` column dropped: the label says it)."""
    shown: list[dict[str, Any]] = []
    for r in report.rows:
        unshared = bool(r.get("unshared_idle"))
        labelled = False
        out: dict[str, Any] = {}
        for c in report.columns:
            v = r[c]
            if c == "unshared_idle":
                continue
            if c == "has_unpriced":
                out["unpriced"] = "yes" if v else ""
            elif c in MONEY_COLUMNS:
                out[c] = "" if v is None else round_money(v, r["currency"])
            elif c in UNIT_COST_COLUMNS:
                out[c] = "" if v is None else round_unit_cost(v, r["currency"])
            elif unshared and v is None and c in ("tenant_id", "model"):
                out[c] = "" if labelled else UNSHARED_IDLE
                labelled = True
            else:
                out[c] = "" if v is None else str(_plain(v))
        shown.append(out)
    numeric = [*COUNT_COLUMNS, *MONEY_COLUMNS, *UNIT_COST_COLUMNS]
    return shown, numeric


def report_title(spec: ReportSpec) -> str:
    """``cost per completion per day, tenant and model`` (and ``, with idle share``)."""
    names = [k.removesuffix("_id") for k in spec.keys]
    per = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"cost per completion per {per}" + (
        ", with idle share" if spec.include_idle_share else ""
    )


def period_bounds(report: Report) -> tuple[date | None, date | None]:
    """The first and last UTC day of the report, both included: ``--since`` and the day
    before ``--until`` when given, else the first and last day with rows."""
    spec = report.spec
    first = spec.since if spec.since is not None else report.first_day
    last = spec.until - timedelta(days=1) if spec.until is not None else report.last_day
    return first, last


def period_line(report: Report) -> str:
    """``period: 2026-03-01 .. 2026-03-31 (UTC days, both included)``, saying which end comes
    from the data rather than from --since/--until."""
    first, last = period_bounds(report)
    from_data = [
        what
        for what, given in (("first", report.spec.since), ("last", report.spec.until))
        if given is None
    ]
    note = f"; the {' and '.join(from_data)} day with data" if from_data else ""
    return f"period: {first or '?'} .. {last or '?'} (UTC days, both included{note})"


def no_rows_line(spec: ReportSpec) -> str:
    """``no rows for tenant acme, all models, UTC days 2026-03-01 .. 2026-03-31 (both
    included)``: what was asked, for a report without rows."""
    last = spec.until - timedelta(days=1) if spec.until is not None else None
    if spec.since is not None and last is not None:
        days = f"UTC days {spec.since} .. {last} (both included)"
    elif spec.since is not None:
        days = f"UTC days from {spec.since} on"
    elif last is not None:
        days = f"UTC days up to {last} (included)"
    else:
        days = "any day"
    tenant = f"tenant {spec.tenant}" if spec.tenant is not None else "all tenants"
    model = f"model {spec.model}" if spec.model is not None else "all models"
    return f"no rows for {tenant}, {model}, {days}"


def totals(report: Report) -> dict[str, dict[str, Decimal]]:
    """Per currency, the sums of the rows' money columns at full precision, and (with the idle
    share) ``unshared_idle``: the part of ``idle_share`` on unshared rows."""
    out: dict[str, dict[str, Decimal]] = {}
    for r in report.rows:
        sums = out.setdefault(r["currency"], {})
        for c in MONEY_COLUMNS:
            if c in r:
                sums[c] = sums.get(c, Decimal(0)) + (r[c] or 0)
        if "unshared_idle" in r:
            part = r["idle_share"] if r["unshared_idle"] else Decimal(0)
            sums["unshared_idle"] = sums.get("unshared_idle", Decimal(0)) + part
    return out


def total_lines(report: Report) -> list[str]:
    """``total USD: amount 0.50`` per currency (with the idle share: ``total USD:
    amount_with_idle 1.20 = amount 0.50 + idle_share 0.70``), rounded once, after summing."""
    lines = []
    for currency, sums in sorted(totals(report).items()):
        amount = round_money(sums["amount"], currency)
        if "amount_with_idle" not in sums:
            lines.append(f"total {currency}: amount {amount}")
            continue
        line = (
            f"total {currency}: amount_with_idle {round_money(sums['amount_with_idle'], currency)}"
            f" = amount {amount} + idle_share {round_money(sums['idle_share'], currency)}"
        )
        if sums["unshared_idle"]:
            line += f" (unshared idle {round_money(sums['unshared_idle'], currency)} of it)"
        lines.append(line)
    return lines


UNPRICED_NOTE = (
    "some of the row's usage was recorded with no rate or bill (cost_basis "
    "unpriced, amount 0); its cost is missing, not zero, unless a later rate or bill priced "
    "it (reconciliation entries)"
)


def footnotes(report: Report) -> list[str]:
    """What the table's reader must know: the unpriced marker (when a row has it), that the
    unshared idle is left out by a tenant or model filter, the rounding, and the source."""
    spec = report.spec
    notes = []
    if any(r["has_unpriced"] for r in report.rows):
        notes.append(f"unpriced = yes: {UNPRICED_NOTE}")
    if spec.include_idle_share and (spec.tenant is not None or spec.model is not None):
        notes.append(
            f"{UNSHARED_IDLE} belongs to no tenant or model: --tenant and --model leave it out"
        )
    notes.append(
        f"amounts rounded to the currency's minor unit, costs per unit to {UNIT_COST_DIGITS} "
        f"significant digits (--format csv or json: exact); read from {spec.source}"
    )
    return notes


def fleet_summary(engine: Engine) -> list[dict[str, Any]]:
    """Per resource and currency: total cost, busy fraction and idle cost (all entry kinds)."""
    sql = """
        SELECT resource_id, currency,
               sum(amount) AS cost,
               coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0) AS idle_cost,
               round(sum(busy_seconds) FILTER (WHERE tenant_id IS NULL)
                     / nullif(count(DISTINCT bucket_start) * max(bucket_seconds), 0), 4)
                   AS busy_fraction
        FROM ledger_entries
        GROUP BY resource_id, currency
        ORDER BY resource_id, currency
    """
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


WASTE_PER_TENANT = """
WITH g AS (
    SELECT tenant_id, currency, sum(completions) AS completions,
           sum(completions_within_slo) AS within_slo
    FROM v_goodput GROUP BY tenant_id, currency
), w AS (
    SELECT tenant_id, currency, sum(amount) AS amount, sum(failed_cost) AS failed,
           sum(cancelled_cost) AS cancelled, sum(slo_miss_cost) AS slo_miss,
           sum(waste_cost) AS waste
    FROM v_waste GROUP BY tenant_id, currency
)
SELECT w.tenant_id, w.currency, g.completions, g.within_slo, w.amount, w.failed, w.cancelled,
       w.slo_miss, w.waste,
       round(w.waste / nullif(w.amount, 0), 6) AS waste_share,
       round(w.amount / nullif(g.within_slo, 0), 12) AS cost_per_completion_within_slo
FROM w JOIN g USING (tenant_id, currency)
ORDER BY w.tenant_id, w.currency
"""


def waste_per_tenant(engine: Engine) -> list[dict[str, Any]]:
    """Goodput and waste per tenant over the whole ledger (v_goodput and v_waste): completions,
    those within objective, the busy cost, its failed, cancelled and objective-missing parts."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(WASTE_PER_TENANT))]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _plain(value)


def render(
    rows: list[dict[str, Any]],
    fmt: str,
    title: str = "",
    width: int | None = None,
    *,
    columns: Sequence[str] | None = None,
    numeric: Collection[str] | None = None,
) -> str:
    """Rows as ``json``, ``csv`` or a ``table`` fitted to ``width`` columns (default: the
    terminal's, ``COLUMNS`` when set, 200 when the output is not a terminal).

    json: a list of objects, decimals as strings (exact), dates ISO. csv: a header line (from
    ``columns``, so that no rows still give the header; else from the first row), booleans
    ``true``/``false``, decimals exact. A table's ``numeric`` columns are right-aligned and
    may fold (default: every column whose first value is not a string).

    A table that does not fit gets lighter rules and headers wrapped at word breaks, its
    numeric columns shrink (folding long numbers); where even that cannot fit, each row is
    shown as a block of ``column  value`` lines. Text (tenant, model, resource ids) never
    wraps."""
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        fields = list(columns) if columns is not None else list(rows[0]) if rows else []
        if fields:
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            writer.writerows([{k: _csv_cell(v) for k, v in r.items()} for r in rows])
        return out.getvalue()
    if not rows:
        return "(no rows)\n"
    from rich.console import Console
    from rich.measure import Measurement

    width = width or shutil.get_terminal_size(fallback=(200, 24)).columns
    names = list(rows[0])
    cells = [["" if v is None else str(_plain(v)) for v in r.values()] for r in rows]
    if numeric is None:
        text = [isinstance(rows[0][c], str) for c in names]
    else:
        text = [c not in numeric for c in names]
    table = _table(names, cells, text, title, None)
    unbounded = Console(width=10_000, force_terminal=False)
    natural = Measurement.get(unbounded, unbounded.options, table).maximum
    if natural > width:
        widths = _narrow_widths(names, cells, text, width)
        if widths is None:
            return _records(names, cells, title)
        table = _table(names, cells, text, title, widths)
        natural = width
    buffer = io.StringIO()
    Console(file=buffer, width=natural, force_terminal=False).print(table)
    return buffer.getvalue()


def _narrow_widths(
    names: list[str], cells: list[list[str]], text: list[bool], width: int
) -> list[int] | None:
    """Column widths of a narrow table within ``width`` (two spaces between columns): text
    columns whole, headers wrapped at underscores, the widest numbers folded first but no
    column below its header's longest word (or 6); None when that cannot fit."""
    longest = [max(len(r[n]) for r in cells) for n in range(len(names))]
    word = [max(6, *(len(w) for w in name.split("_"))) for name in names]
    widths = [
        max(len(name), longest[n]) if text[n] else max(longest[n], word[n])
        for n, name in enumerate(names)
    ]
    excess = sum(widths) + 2 * (len(names) - 1) - width
    while excess > 0:
        shrinkable = [n for n in range(len(names)) if not text[n] and widths[n] > word[n]]
        if not shrinkable:
            return None
        widest = max(shrinkable, key=lambda n: widths[n])
        widths[widest] -= 1
        excess -= 1
    return widths


def _table(
    names: list[str],
    cells: list[list[str]],
    text: list[bool],
    title: str,
    widths: list[int] | None,
) -> Any:
    """The rich table at its natural width, or narrow: fixed ``widths``, lighter rules,
    headers wrapped at word breaks (underscores become spaces) and long numbers folded."""
    from rich import box
    from rich.table import Table

    if widths is None:
        table = Table(title=title or None)
    else:
        table = Table(
            title=title or None,
            box=box.SIMPLE_HEAD,
            collapse_padding=True,
            pad_edge=False,
            show_edge=False,
        )
    for n, (name, is_text) in enumerate(zip(names, text, strict=True)):
        table.add_column(
            name if widths is None else name.replace("_", " "),
            justify="left" if is_text else "right",
            no_wrap=is_text,  # ids and names stay whole
            overflow="ellipsis" if is_text else "fold",
            width=None if widths is None else widths[n],
        )
    for row in cells:
        table.add_row(*row)
    return table


def _records(names: list[str], cells: list[list[str]], title: str) -> str:
    """One block of ``column  value`` lines per row, for terminals too narrow for a table."""
    key = max(len(name) for name in names)
    blocks = [f"{title}\n"] if title else []
    for n, row in enumerate(cells):
        lines = [f"-[ {n + 1} ]-"] + [
            f"{name:<{key}}  {value}".rstrip() for name, value in zip(names, row, strict=True)
        ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def provisional_vs_billed(
    engine: Engine,
    tenant: str | None = None,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Per tenant (idle as its own row): what provisional rates said, what the bill says. With
    ``tenant`` or ``model``, only those entries (idle is nobody's: left out); ``since`` and
    ``until`` (exclusive) are UTC days of the buckets."""
    where, params = journal_filter(tenant, model, since, until)
    sql = f"""
        SELECT coalesce(tenant_id, '(idle)') AS tenant, currency,
               sum(amount) FILTER (WHERE entry_kind <> 'reconciliation') AS provisional,
               coalesce(sum(amount) FILTER (WHERE entry_kind = 'reconciliation'), 0)
                   AS reconciliation,
               sum(amount) AS billed,
               sum(completions)::bigint AS completions,
               round(sum(amount) / nullif(sum(completions), 0), 12) AS billed_per_completion
        FROM ledger_entries
        {where}
        GROUP BY tenant_id, currency
        ORDER BY tenant_id IS NULL, tenant_id, currency
    """
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def journal_filter(
    tenant: str | None = None,
    model: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> tuple[str, dict[str, Any]]:
    """A ``WHERE`` clause on ``ledger_entries`` (empty when nothing is chosen) and its
    parameters: that tenant, that model, buckets starting from UTC day ``since`` to ``until``
    (exclusive): a range on ``bucket_start``, which reaches the month partitions."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if tenant is not None:
        clauses.append("tenant_id = :tenant")
        params["tenant"] = tenant
    if model is not None:
        clauses.append("model = :model")
        params["model"] = model
    if since is not None:
        clauses.append("bucket_start >= :since_ts")
        params["since_ts"] = datetime(since.year, since.month, since.day, tzinfo=UTC)
    if until is not None:
        clauses.append("bucket_start < :until_ts")
        params["until_ts"] = datetime(until.year, until.month, until.day, tzinfo=UTC)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
