"""A self-contained HTML report with inline SVG charts (no JavaScript, no network)."""

from __future__ import annotations

import html
from decimal import Decimal
from pathlib import Path
from typing import Any


def _bars(title: str, items: list[tuple[str, Decimal]], unit: str, color: str) -> str:
    if not items:
        return ""
    top = max((v for _, v in items), default=Decimal(1)) or Decimal(1)
    row_h, label_w, width = 26, 260, 760
    parts = [
        f"<h2>{html.escape(title)}</h2>",
        f'<svg width="{width}" height="{row_h * len(items) + 10}" role="img">',
    ]
    for i, (label, value) in enumerate(items):
        w = float(value / top) * (width - label_w - 140) if top > 0 else 0
        y = i * row_h + 5
        parts.append(
            f'<text x="0" y="{y + 17}" font-size="13">{html.escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{max(w, 1):.1f}" height="{row_h - 6}" '
            f'fill="{color}"/><text x="{label_w + w + 6:.1f}" y="{y + 17}" font-size="13">'
            f"{value:,.4f} {html.escape(unit)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r.values())
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(
    path: Path,
    table: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    summary: dict[str, Any],
    recon: list[dict[str, Any]] | None = None,
) -> Path:
    cur = str(summary["currency"])
    per_tenant: dict[str, Decimal] = {}
    for r in table:
        per_tenant[r["tenant_id"]] = per_tenant.get(r["tenant_id"], Decimal(0)) + r["amount"]
    cpc = [
        (f"{r['tenant_id']} / {r['model']}", r["cost_per_completion"] or Decimal(0)) for r in table
    ]
    busy = [(n["resource_id"], (n["busy_fraction"] or Decimal(0)) * 100) for n in nodes]
    idle = [(n["resource_id"], n["idle_cost"] or Decimal(0)) for n in nodes]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>inferledger demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;
text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>inferledger: what each completion cost</h1>
<p>{summary["events"]} requests of the Azure LLM inference trace 2023 (code), replayed on a
simulated GPU fleet. Total {summary["total_cost"]:.2f} {cur}, of which idle GPU time
{summary["idle_cost"]:.2f} {cur} ({summary["idle_share"]:.1%}); {summary["completions"]}
completions.</p>
{_bars("Spend per tenant (busy cost)", sorted(per_tenant.items()), cur, "#4878a8")}
{_bars("Cost per completion, per tenant and model", cpc, cur, "#6a9f58")}
{_bars("Busy fraction per node", busy, "%", "#d08a3c")}
{_bars("Idle cost per node", idle, cur, "#b85450")}
<h2>Provisional (rates) versus billed (FOCUS bill)</h2>
<p>Provisional total {summary.get("provisional_total", 0):.2f} {cur}; after reconciliation with
the bill {summary["total_cost"]:.2f} {cur}.</p>{_table(recon or [])}
<h2>Cost per completion</h2>{_table(table)}
<h2>Fleet</h2>{_table(nodes)}
<p>Trace: Azure Public Dataset, "Azure LLM inference trace 2023" (CC BY 4.0), Patel et al.,
ISCA 2024.</p></body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path.resolve()
