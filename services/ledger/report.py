"""Reading the ledger back: the cost-per-completion table, the fleet summary, and tables
rendered to fit the terminal."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text


def cost_per_completion(
    engine: Engine, tenant: str | None = None, since: date | None = None, until: date | None = None
) -> list[dict[str, Any]]:
    """Rows of ``v_cost_per_completion`` summed over the chosen days, per tenant and model."""
    sql = """
        SELECT tenant_id, model, currency,
               sum(completions)::bigint AS completions,
               sum(failed_requests)::bigint AS failed_requests,
               sum(prompt_tokens)::bigint AS prompt_tokens,
               sum(completion_tokens)::bigint AS completion_tokens,
               sum(amount) AS amount,
               round(sum(amount) / nullif(sum(completions), 0), 12) AS cost_per_completion,
               round(sum(amount) * 1000 / nullif(sum(prompt_tokens + completion_tokens), 0), 12)
                   AS cost_per_1k_tokens
        FROM v_cost_per_completion
        WHERE (CAST(:tenant AS text) IS NULL OR tenant_id = :tenant)
          AND (CAST(:since AS date) IS NULL OR day >= :since)
          AND (CAST(:until AS date) IS NULL OR day < :until)
        GROUP BY tenant_id, model, currency
        ORDER BY tenant_id, model, currency
    """
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {"tenant": tenant, "since": since, "until": until})
        return [dict(r._mapping) for r in rows]


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


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def render(rows: list[dict[str, Any]], fmt: str, title: str = "", width: int | None = None) -> str:
    """Rows as ``json``, ``csv`` or a ``table`` fitted to ``width`` columns (default: the
    terminal's, ``COLUMNS`` when set, 200 when the output is not a terminal).

    A table that does not fit gets lighter rules and headers wrapped at word breaks, its
    numeric columns shrink (folding long numbers); where even that cannot fit, each row is
    shown as a block of ``column  value`` lines. Text (tenant, model, resource ids) never
    wraps."""
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows([{k: _plain(v) for k, v in r.items()} for r in rows])
        return out.getvalue()
    if not rows:
        return "(no rows)\n"
    from rich.console import Console
    from rich.measure import Measurement

    width = width or shutil.get_terminal_size(fallback=(200, 24)).columns
    names = list(rows[0])
    cells = [["" if v is None else str(_plain(v)) for v in r.values()] for r in rows]
    text = [isinstance(rows[0][c], str) for c in names]
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


def provisional_vs_billed(engine: Engine) -> list[dict[str, Any]]:
    """Per tenant (idle as its own row): what provisional rates said, what the bill says."""
    sql = """
        SELECT coalesce(tenant_id, '(idle)') AS tenant, currency,
               sum(amount) FILTER (WHERE entry_kind <> 'reconciliation') AS provisional,
               coalesce(sum(amount) FILTER (WHERE entry_kind = 'reconciliation'), 0)
                   AS reconciliation,
               sum(amount) AS billed,
               sum(completions)::bigint AS completions,
               round(sum(amount) / nullif(sum(completions), 0), 12) AS billed_per_completion
        FROM ledger_entries
        GROUP BY tenant_id, currency
        ORDER BY tenant_id IS NULL, tenant_id, currency
    """
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]
