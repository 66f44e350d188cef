"""The HTML report (``inferledger report --format html``, the demo's ``reports/demo.html``),
rendered from data already read: pure, no I/O (:func:`render_html` takes a
:class:`HtmlReportData` and returns the page). ``services.ledger.overview`` reads the data.

One self-contained page that works offline: styles inline, no script at all, charts as inline
SVG drawn here, tooltips as SVG ``<title>`` (full precision), and a Content-Security-Policy
that forbids every fetch and every script. Every string from the database is escaped (tenant
ids come from the events' senders). Amounts are rounded for reading with the table's rules
(``services.ledger.rounding``); exact values are in tooltips and in "exact values" tables.

Each chart is an ``<svg class="chart">`` with ``data-chart`` (its name), ``data-series`` (the
entries of its legend) and ``data-points`` (bars, time steps or rows), which the browser test
reads back.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.ledger.rounding import UNIT_COST_DIGITS, round_money, round_unit_cost

MAX_RESOURCES = 40
"""Resources shown in the heatmap and the idle-cost bars: those of the highest cost."""
MAX_SERIES = 10
"""Lines of a cost-per-completion chart (tenant and model pairs of the highest spend), and
tenants of the spend chart (the rest summed as one band, "other tenants")."""
IDLE = "idle (no tenant)"
OTHERS = "other tenants"
UNSHARED = "(unshared idle)"
PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#6b6ecf",
)  # fmt: skip
IDLE_COLOR = "#b8b8b8"
OTHERS_COLOR = "#8c8c8c"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class SpendPoint:
    """The ledger's amount in one time step: a tenant's (``tenant`` None: the idle entries)."""

    start: datetime
    tenant: str | None
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class UnitCostPoint:
    """A tenant's sums on one model in one time step, for its cost per completion and per 1k
    tokens (completions count in the bucket where they finished)."""

    start: datetime
    tenant: str
    model: str
    currency: str
    completions: int
    tokens: int
    amount: Decimal


@dataclass(frozen=True)
class UtilCell:
    """One resource in one time step: busy fraction (None: no bucket), cost, idle cost."""

    resource: str
    start: datetime
    currency: str
    busy_fraction: Decimal | None
    cost: Decimal
    idle_cost: Decimal


@dataclass(frozen=True)
class ResourceTotal:
    """One resource over the whole period."""

    resource: str
    currency: str
    cost: Decimal
    idle_cost: Decimal
    busy_fraction: Decimal | None


@dataclass(frozen=True)
class Total:
    """The ledger's sums over the selection, per currency: every entry, the idle entries, and
    how many entries were unpriced (no rate or bill: amount 0, cost missing)."""

    currency: str
    amount: Decimal
    idle: Decimal
    completions: int = 0
    unpriced_entries: int = 0

    @property
    def busy(self) -> Decimal:
        return self.amount - self.idle


@dataclass
class HtmlReportData:
    """Everything the page shows, read from the ledger (full precision)."""

    title: str
    generated_at: datetime
    first_day: date | None = None
    last_day: date | None = None
    since_given: bool = False
    until_given: bool = False
    tenant: str | None = None
    model: str | None = None
    step_seconds: int = 3600
    data_from: datetime | None = None
    data_to: datetime | None = None
    fresh_until: datetime | None = None
    totals: list[Total] = field(default_factory=list)
    spend: list[SpendPoint] = field(default_factory=list)
    unit_costs: list[UnitCostPoint] = field(default_factory=list)
    utilization: list[UtilCell] = field(default_factory=list)
    resources: list[ResourceTotal] = field(default_factory=list)
    per_completion: list[dict[str, Any]] = field(default_factory=list)
    reconciliation: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[dict[str, Any]] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def step_for(span: timedelta, bucket_seconds: int = 60) -> int:
    """The time step of the charts for data spanning ``span``: 5 minutes up to 6 hours, an
    hour up to 3 days, else a day (never shorter than a bucket)."""
    if span <= timedelta(hours=6):
        step = 300
    elif span <= timedelta(days=3):
        step = 3600
    else:
        step = 86400
    return max(step, bucket_seconds)


# -- formatting --------------------------------------------------------------------------------


def esc(value: object) -> str:
    """Any value as escaped text (None: empty): quotes too, so it is safe in attributes."""
    return "" if value is None else html.escape(str(value), quote=True)


def exact(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def money(value: Decimal | None, currency: str) -> str:
    """``<span title="1.200000000000">1.20</span>``: rounded, exact in the tooltip."""
    if value is None:
        return ""
    return f'<span title="{esc(exact(value))}">{esc(round_money(value, currency))}</span>'


def unit_cost(value: Decimal | None, currency: str) -> str:
    if value is None:
        return ""
    return f'<span title="{esc(exact(value))}">{esc(round_unit_cost(value, currency))}</span>'


def percent(fraction: Decimal | float | None, places: int = 1) -> str:
    """``58.3 %`` (None: empty)."""
    if fraction is None:
        return ""
    return f"{float(fraction) * 100:.{places}f} %"


def _when(t: datetime, step: int) -> str:
    t = t.astimezone(UTC)
    if step >= 86400:
        return t.strftime("%Y-%m-%d")
    return t.strftime("%Y-%m-%d %H:%M")


def _axis_label(t: datetime, step: int, multi_day: bool) -> str:
    t = t.astimezone(UTC)
    if step >= 86400:
        return t.strftime("%m-%d")
    return t.strftime("%m-%d %H:%M") if multi_day else t.strftime("%H:%M")


def _short(label: str, chars: int = 26) -> str:
    return label if len(label) <= chars else label[: chars - 1] + "\u2026"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering ``lo`` .. ``hi``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [i * step for i in range(first, last + 1)]


def _tick_text(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    places = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{places}f}"


def _legend(entries: Sequence[tuple[str, str]]) -> str:
    items = "".join(
        f'<li><span class="sw" style="background:{color}"></span>{esc(label)}</li>'
        for label, color in entries
    )
    return f'<ul class="legend">{items}</ul>'


# -- charts ------------------------------------------------------------------------------------

W, H = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 72, 12, 12, 34


def _steps(data: HtmlReportData, starts: Iterable[datetime]) -> list[datetime]:
    """Every time step from the first to the last of ``starts`` (gaps included)."""
    found = sorted(set(starts))
    if not found:
        return []
    step = timedelta(seconds=data.step_seconds)
    out: list[datetime] = []
    t = found[0]
    while t <= found[-1] and len(out) < 5000:
        out.append(t)
        t += step
    return out


def _x_axis(times: list[datetime], step: int, x_of: Any) -> str:
    if not times:
        return ""
    multi_day = times[0].date() != times[-1].date()
    every = max(1, math.ceil(len(times) / 8))
    parts = []
    for i in range(0, len(times), every):
        x = x_of(i)
        parts.append(
            f'<text class="ax" x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{esc(_axis_label(times[i], step, multi_day))}</text>"
        )
    return "".join(parts)


def _y_axis(ticks: list[float], y_of: Any) -> str:
    parts = []
    for v in ticks:
        y = y_of(v)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="ax" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_tick_text(v, ticks)}</text>"
        )
    return "".join(parts)


def stacked_chart(
    name: str,
    times: list[datetime],
    series: list[tuple[str, str, dict[datetime, Decimal]]],
    currency: str,
    step: int,
) -> str:
    """Stacked columns per time step: ``series`` is (label, color, amount per step); positive
    amounts stack up from zero, negative ones (credits) down."""
    n = max(len(times), 1)
    totals_up = [
        sum((max(s[2].get(t, Decimal(0)), Decimal(0)) for s in series), Decimal(0)) for t in times
    ]
    totals_down = [
        sum((min(s[2].get(t, Decimal(0)), Decimal(0)) for s in series), Decimal(0)) for t in times
    ]
    ticks = _ticks(float(min(totals_down, default=0)), float(max(totals_up, default=0)))
    lo, hi = ticks[0], ticks[-1]
    plot_h = H - TOP - BOTTOM
    plot_w = W - LEFT - RIGHT

    def y_of(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * plot_h

    slot = plot_w / n

    def x_of(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    bar = max(slot * 0.8, 0.5)
    parts = [_y_axis(ticks, y_of)]
    for i, t in enumerate(times):
        up, down = 0.0, 0.0
        for label, color, values in series:
            v = values.get(t)
            if v is None or v == 0:
                continue
            f = float(v)
            if f > 0:
                y0, y1 = y_of(up + f), y_of(up)
                up += f
            else:
                y0, y1 = y_of(down), y_of(down + f)
                down += f
            tip = f"{label}, {_when(t, step)}: {round_money(v, currency)} {currency} ({exact(v)})"
            parts.append(
                f'<rect x="{x_of(i) - bar / 2:.2f}" y="{y0:.2f}" width="{bar:.2f}" '
                f'height="{max(y1 - y0, 0.5):.2f}" fill="{color}"><title>{esc(tip)}</title></rect>'
            )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{y_of(0):.1f}" y2="{y_of(0):.1f}"/>'
    )
    parts.append(_x_axis(times, step, x_of))
    return _svg(name, len(series), len(times), H, "".join(parts), f"{currency} per step")


def line_chart(
    name: str,
    times: list[datetime],
    series: list[tuple[str, str, dict[datetime, Decimal]]],
    currency: str,
    step: int,
) -> str:
    """One line per series over the time steps (a point where the series has a value; a step
    without one breaks the line)."""
    values = [float(v) for _, _, d in series for v in d.values()]
    ticks = _ticks(min(values, default=0.0), max(values, default=0.0))
    lo, hi = ticks[0], ticks[-1]
    plot_h = H - TOP - BOTTOM
    slot = (W - LEFT - RIGHT) / max(len(times), 1)

    def y_of(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * plot_h

    def x_of(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    parts = [_y_axis(ticks, y_of)]
    for label, color, points in series:
        runs: list[list[str]] = [[]]
        dots = []
        for i, t in enumerate(times):
            v = points.get(t)
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            x, y = x_of(i), y_of(float(v))
            runs[-1].append(f"{x:.1f},{y:.1f}")
            tip = (
                f"{label}, {_when(t, step)}: {round_unit_cost(v, currency)} {currency} ({exact(v)})"
            )
            dots.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                f"<title>{esc(tip)}</title></circle>"
            )
        lines = "".join(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(r)}"/>'
            for r in runs
            if len(r) > 1
        )
        parts.append(f'<g class="series">{lines}{"".join(dots)}</g>')
    parts.append(_x_axis(times, step, x_of))
    return _svg(name, len(series), len(times), H, "".join(parts), currency)


def heatmap(
    name: str,
    times: list[datetime],
    rows: list[str],
    cells: dict[tuple[str, datetime], UtilCell],
    step: int,
) -> str:
    """Busy fraction per resource (rows) and time step (columns), white (0) to dark blue (1)."""
    label_w, row_h = 190, 16
    height = TOP + row_h * len(rows) + BOTTOM
    slot = (W - label_w - RIGHT) / max(len(times), 1)
    parts = []
    for r, resource in enumerate(rows):
        y = TOP + r * row_h
        parts.append(
            f'<text class="lbl" x="{label_w - 6}" y="{y + row_h - 4}" text-anchor="end">'
            f"<title>{esc(resource)}</title>{esc(_short(resource))}</text>"
        )
        for i, t in enumerate(times):
            cell = cells.get((resource, t))
            if cell is None or cell.busy_fraction is None:
                continue
            frac = min(max(float(cell.busy_fraction), 0.0), 1.0)
            tip = (
                f"{resource}, {_when(t, step)}: busy {percent(cell.busy_fraction)} "
                f"({exact(cell.busy_fraction)}), cost {round_money(cell.cost, cell.currency)} "
                f"{cell.currency} ({exact(cell.cost)}), "
                f"idle {round_money(cell.idle_cost, cell.currency)} ({exact(cell.idle_cost)})"
            )
            parts.append(
                f'<rect x="{label_w + i * slot:.2f}" y="{y}" width="{max(slot - 1, 0.5):.2f}" '
                f'height="{row_h - 2}" fill="{_blue(frac)}"><title>{esc(tip)}</title></rect>'
            )

    def x_of(i: int) -> float:
        return label_w + slot * (i + 0.5)

    axis = _x_axis(times, step, x_of).replace(
        f'y="{H - BOTTOM + 16}"', f'y="{height - BOTTOM + 16}"'
    )
    parts.append(axis)
    return _svg(name, len(rows), len(times), height, "".join(parts), "busy fraction")


def _blue(frac: float) -> str:
    light, dark = (240, 244, 250), (8, 48, 107)
    rgb = (round(a + (b - a) * frac) for a, b in zip(light, dark, strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def hbars(
    name: str,
    items: list[tuple[str, list[Decimal]]],
    colors: list[str],
    labels: list[str],
    currency: str,
) -> str:
    """Horizontal bars, one per item, each stacked from its parts (negative parts drawn as
    nothing; the printed value is the exact sum, rounded)."""
    label_w, row_h, value_w = 190, 22, 110
    height = TOP + row_h * len(items) + 8
    top = max(
        (sum((max(p, Decimal(0)) for p in parts), Decimal(0)) for _, parts in items),
        default=Decimal(0),
    )
    scale = (W - label_w - value_w - RIGHT) / float(top) if top > 0 else 0.0
    out = []
    for r, (label, parts) in enumerate(items):
        y = TOP + r * row_h
        out.append(
            f'<text class="lbl" x="{label_w - 6}" y="{y + row_h - 7}" text-anchor="end">'
            f"<title>{esc(label)}</title>{esc(_short(label))}</text>"
        )
        x = float(label_w)
        for part, color, what in zip(parts, colors, labels, strict=True):
            w = float(max(part, Decimal(0))) * scale
            tip = f"{label}: {what} {round_money(part, currency)} {currency} ({exact(part)})"
            out.append(
                f'<rect x="{x:.2f}" y="{y}" width="{max(w, 0.5):.2f}" height="{row_h - 6}" '
                f'fill="{color}"><title>{esc(tip)}</title></rect>'
            )
            x += w
        total = sum(parts, Decimal(0))
        out.append(
            f'<text class="val" x="{x + 6:.1f}" y="{y + row_h - 7}">'
            f"<title>{esc(exact(total))}</title>"
            f"{esc(round_money(total, currency))} {esc(currency)}</text>"
        )
    return _svg(name, len(colors), len(items), height, "".join(out), currency)


def _svg(name: str, series: int, points: int, height: int, body: str, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{esc(name)}" data-series="{series}" '
        f'data-points="{points}" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
        f'role="img" aria-label="{esc(name)} ({esc(label)})" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


# -- tables ------------------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Iterable[int] = ()
) -> str:
    """A table of already-escaped cells in a horizontally scrolling box; ``numeric`` columns
    are right-aligned, the others never wrap."""
    num = set(numeric)
    head = "".join(
        f'<th class="{"n" if i in num else "t"}">{esc(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if i in num else "t"}">{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def exact_table(rows: list[dict[str, Any]], summary: str = "exact values") -> str:
    """The rows as read (12-decimal amounts), under a closed ``<details>``."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[esc(_plain(r[c])) for c in columns] for r in rows]
    return f"<details><summary>{esc(summary)}</summary>{table(columns, cells)}</details>"


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


# -- the page ----------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:4px 0 8px}
h3{font-size:14.5px;margin:14px 0 6px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:12px 16px;margin:14px 0}
.meta{color:#4a5263;margin:2px 0}.meta b{color:#1d2330}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:8px 14px;min-width:150px}
.card .k{color:#5b6375;font-size:12px}.card .v{font-size:20px;font-weight:600;white-space:nowrap}
.warn{background:#fff4e5;border:1px solid #f0b35b;border-radius:6px;padding:8px 12px;margin:10px 0}
.note{color:#5b6375;font-size:12.5px}
svg.chart{display:block;width:100%;height:auto;max-width:100%}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.val{font-weight:600}
svg .grid{stroke:#e6e8ee}svg .axis{stroke:#666}
.legend{list-style:none;padding:0;margin:4px 0 8px;display:flex;flex-wrap:wrap;gap:4px 14px}
.legend li{white-space:nowrap;font-size:12.5px}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e8;padding:3px 8px}th{background:#f0f2f5;white-space:nowrap}
td.t,th.t{text-align:left;white-space:nowrap}td.n,th.n{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}
details{margin:6px 0}summary{cursor:pointer;color:#3b5b8c}
.heat{display:flex;align-items:center;gap:6px;font-size:12px;color:#5b6375}
.ramp{width:140px;height:10px;background:linear-gradient(90deg,#f0f4fa,#08306b)}
"""

_STEP_WORDS = {300: "5 minutes", 3600: "1 hour", 86400: "1 day"}


def render_html(data: HtmlReportData) -> str:
    """The whole page, as a string."""
    body = [
        _header(data),
        _spend_section(data),
        _unit_cost_section(data),
        _utilization_section(data),
        _reconciliation_section(data),
        _budget_section(data),
        _footer(data),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(data.title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _step_words(step: int) -> str:
    return _STEP_WORDS.get(step, f"{step} s")


def _header(data: HtmlReportData) -> str:
    out = [f"<h1>{esc(data.title)}</h1>"]
    out += [f'<p class="meta">{esc(n)}</p>' for n in data.notes]
    if data.first_day is None:
        period = "no data in this selection"
    else:
        from_data = [
            w for w, given in (("first", data.since_given), ("last", data.until_given)) if not given
        ]
        note = f"; the {' and '.join(from_data)} day with data" if from_data else ""
        period = f"{data.first_day} .. {data.last_day} (UTC days, both included{note})"
    out.append(
        f'<p class="meta" data-period="{esc(data.first_day)}..{esc(data.last_day)}">'
        f"<b>Period:</b> {esc(period)}"
    )
    if data.data_from is not None and data.data_to is not None:
        out.append(
            f"; buckets from {esc(_when(data.data_from, 60))} "
            f"to {esc(_when(data.data_to, 60))} UTC, "
            f"charted in steps of {esc(_step_words(data.step_seconds))}"
        )
    out.append("</p>")
    who = f"tenant {data.tenant}" if data.tenant is not None else "all tenants"
    what = f"model {data.model}" if data.model is not None else "all models"
    out.append(f'<p class="meta"><b>Selection:</b> {esc(who)}, {esc(what)}</p>')
    fresh = (
        f"{_when(data.fresh_until, 60)} UTC"
        if data.fresh_until is not None
        else "nothing in the ledger yet"
    )
    out.append(
        f'<p class="meta" data-fresh="{esc(exact_time(data.fresh_until))}"><b>Data as of:</b> '
        f"latest bucket closed {esc(fresh)} (the whole ledger); "
        f"report made {esc(_when(data.generated_at, 60))} UTC</p>"
    )
    unpriced = sum(t.unpriced_entries for t in data.totals)
    if unpriced:
        out.append(
            f'<p class="warn" data-unpriced="{unpriced}"><b>Unpriced usage:</b> {unpriced} '
            "ledger entries in this selection had no rate or bill (amount 0): their cost is "
            "missing, not zero, so the amounts below are too low where a row says "
            "<b>unpriced</b>, unless a later rate or bill priced them (reconciliation entries).</p>"
        )
    if data.tenant is not None or data.model is not None:
        out.append(
            '<p class="note">Idle GPU time belongs to no tenant or model: with a tenant or model '
            "chosen, the ledger's idle entries are left out of the totals and the spend chart; "
            "each row's idle share is in the cost-per-completion table.</p>"
        )
    out.append(_cards(data))
    return "".join(out)


def exact_time(t: datetime | None) -> str:
    return "" if t is None else t.astimezone(UTC).isoformat()


def _cards(data: HtmlReportData) -> str:
    cards = []
    for t in data.totals:
        cur = t.currency

        def card(kind: str, label: str, value: Decimal, extra: str = "", cur: str = cur) -> str:
            return (
                f'<div class="card"><div class="k">{esc(label)}</div><div class="v" '
                f'data-total="{kind}" data-currency="{esc(cur)}" data-exact="{esc(exact(value))}" '
                f'title="{esc(exact(value))} {esc(cur)}">{esc(round_money(value, cur))} {esc(cur)}'
                f"{extra}</div></div>"
            )

        cards.append(card("total", f"total cost ({cur})", t.amount))
        cards.append(card("busy", "busy: tenants' usage", t.busy))
        share = (
            f' <span class="note">{percent(t.idle / t.amount)} of cost</span>' if t.amount else ""
        )
        cards.append(card("idle", "idle GPU time", t.idle, share))
        if t.completions:
            per = (t.busy / t.completions).quantize(Decimal("1e-12"))
            with_idle = (t.amount / t.completions).quantize(Decimal("1e-12"))
            cards.append(
                f'<div class="card"><div class="k">per completion: busy / with idle '
                f'({t.completions:,} completions)</div><div class="v">{unit_cost(per, cur)} / '
                f"{unit_cost(with_idle, cur)} {esc(cur)}</div></div>"
            )
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def _currencies(data: HtmlReportData) -> list[str]:
    return sorted({t.currency for t in data.totals} | {p.currency for p in data.spend})


def _spend_section(data: HtmlReportData) -> str:
    out = ["<section><h2>Spend per tenant over time, idle as its own band</h2>"]
    if not data.spend:
        out.append("<p>No ledger entries in this selection.</p>")
    for cur in _currencies(data):
        points = [p for p in data.spend if p.currency == cur]
        if not points:
            continue
        by_tenant: dict[str, Decimal] = {}
        for p in points:
            if p.tenant is not None:
                by_tenant[p.tenant] = by_tenant.get(p.tenant, Decimal(0)) + p.amount
        ranked = sorted(by_tenant, key=lambda k: (-by_tenant[k], k))
        shown, rest = ranked[: MAX_SERIES - 1] if len(ranked) > MAX_SERIES else ranked, set()
        if len(ranked) > MAX_SERIES:
            rest = set(ranked[MAX_SERIES - 1 :])
        series: dict[str, dict[datetime, Decimal]] = {k: {} for k in shown}
        others: dict[datetime, Decimal] = {}
        idle: dict[datetime, Decimal] = {}
        for p in points:
            target = idle if p.tenant is None else others if p.tenant in rest else series[p.tenant]
            target[p.start] = target.get(p.start, Decimal(0)) + p.amount
        drawn = [(k, PALETTE[i % len(PALETTE)], series[k]) for i, k in enumerate(shown)]
        if others:
            drawn.append((f"{OTHERS} ({len(rest)})", OTHERS_COLOR, others))
        if idle:
            drawn.append((IDLE, IDLE_COLOR, idle))
        times = _steps(data, (p.start for p in points))
        out.append(f"<h3>{esc(cur)} per {esc(_step_words(data.step_seconds))}</h3>")
        out.append(_legend([(label, color) for label, color, _ in drawn]))
        out.append(stacked_chart(f"spend-{cur}", times, drawn, cur, data.step_seconds))
        if rest:
            out.append(
                f'<p class="note">The {MAX_SERIES - 1} tenants of the highest spend are '
                f"shown; {len(rest)} others are summed as one band.</p>"
            )
    out.append(_per_tenant_bars(data))
    out.append("</section>")
    return "".join(out)


def _per_tenant_bars(data: HtmlReportData) -> str:
    """Per tenant, its busy cost (the ledger's amounts of its usage: as billed where a bill
    arrived, else provisional) and, stacked on it, its share of the idle cost."""
    rows = [r for r in data.per_completion if not r.get("unshared_idle")]
    out = []
    for cur in sorted({r["currency"] for r in rows}):
        busy: dict[str, Decimal] = {}
        idle: dict[str, Decimal] = {}
        for r in rows:
            if r["currency"] != cur:
                continue
            busy[r["tenant_id"]] = busy.get(r["tenant_id"], Decimal(0)) + (
                r["amount"] or Decimal(0)
            )
            idle[r["tenant_id"]] = idle.get(r["tenant_id"], Decimal(0)) + (
                r.get("idle_share") or Decimal(0)
            )
        items = [
            (k, [busy[k], idle[k]]) for k in sorted(busy, key=lambda k: (-(busy[k] + idle[k]), k))
        ]
        out.append(f"<h3>Per tenant over the period: busy cost and idle share ({esc(cur)})</h3>")
        out.append(
            _legend(
                [("busy cost (its own usage)", PALETTE[0]), ("share of idle GPU time", IDLE_COLOR)]
            )
        )
        out.append(
            hbars(
                f"tenant-spend-{cur}",
                items,
                [PALETTE[0], IDLE_COLOR],
                ["busy cost", "idle share"],
                cur,
            )
        )
    if out:
        out.append(
            '<p class="note">Busy cost is the sum of the tenant\'s ledger entries: priced by the '
            "bill where one arrived (reconciliation entries), else by the provisional rates. The "
            "idle share divides each resource-day's idle cost among its tenants in proportion to "
            "their busy cost (v_cost_per_completion_with_idle).</p>"
        )
    return "".join(out)


def _unit_cost_section(data: HtmlReportData) -> str:
    out = ["<section><h2>Cost per completion and per 1k tokens, per tenant and model</h2>"]
    for cur in sorted({p.currency for p in data.unit_costs}):
        points = [p for p in data.unit_costs if p.currency == cur]
        spend: dict[tuple[str, str], Decimal] = {}
        for p in points:
            spend[(p.tenant, p.model)] = spend.get((p.tenant, p.model), Decimal(0)) + p.amount
        ranked = sorted(spend, key=lambda k: (-spend[k], k))[:MAX_SERIES]
        per_c: dict[tuple[str, str], dict[datetime, Decimal]] = {k: {} for k in ranked}
        per_k: dict[tuple[str, str], dict[datetime, Decimal]] = {k: {} for k in ranked}
        for p in points:
            key = (p.tenant, p.model)
            if key not in per_c:
                continue
            if p.completions:
                per_c[key][p.start] = (p.amount / p.completions).quantize(Decimal("1e-12"))
            if p.tokens:
                per_k[key][p.start] = (p.amount * 1000 / p.tokens).quantize(Decimal("1e-12"))
        times = _steps(data, (p.start for p in points))
        colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ranked)}
        label = {k: f"{k[0]} / {k[1]}" for k in ranked}
        out.append(_legend([(label[k], colors[k]) for k in ranked]))
        out.append('<div class="pair">')
        for name, title, values in (
            ("cost-per-completion", "per completion", per_c),
            ("cost-per-1k-tokens", "per 1k tokens", per_k),
        ):
            drawn = [(label[k], colors[k], values[k]) for k in ranked if values[k]]
            out.append(
                f"<h3>{esc(cur)} {esc(title)}, busy cost, "
                f"per {esc(_step_words(data.step_seconds))}</h3>"
            )
            out.append(line_chart(f"{name}-{cur}", times, drawn, cur, data.step_seconds))
        out.append("</div>")
        if len(spend) > len(ranked):
            out.append(
                f'<p class="note">The {len(ranked)} tenant and model pairs of the highest spend '
                f"are drawn, of {len(spend)}; the table has them all.</p>"
            )
    out.append(_per_completion_table(data))
    out.append("</section>")
    return "".join(out)


def _per_completion_table(data: HtmlReportData) -> str:
    rows = data.per_completion
    if not rows:
        return "<p>No completions in this selection.</p>"
    headers = [
        "tenant", "model", "currency", "completions", "busy cost", "idle share", "with idle",
        "idle % of cost", "per completion", "with idle", "per 1k tokens", "with idle", "unpriced",
    ]  # fmt: skip
    cells = []
    for r in rows:
        cur = r["currency"]
        unshared = bool(r.get("unshared_idle"))
        with_idle = r.get("amount_with_idle")
        idle_share = r.get("idle_share")
        share = idle_share / with_idle if with_idle and idle_share is not None else None
        cells.append(
            [
                esc(UNSHARED if unshared and r["tenant_id"] is None else r["tenant_id"]),
                esc(r["model"]),
                esc(cur),
                f"{r['completions'] or 0:,}",
                money(r["amount"], cur),
                money(idle_share, cur),
                money(with_idle, cur),
                esc(percent(share)),
                unit_cost(r["cost_per_completion"], cur),
                unit_cost(r.get("cost_per_completion_with_idle"), cur),
                unit_cost(r["cost_per_1k_tokens"], cur),
                unit_cost(r.get("cost_per_1k_tokens_with_idle"), cur),
                "<b>unpriced</b>" if r.get("has_unpriced") else "",
            ]
        )
    return (
        "<h3>Over the period, busy and with the idle share</h3>"
        + table(headers, cells, numeric=range(3, 12))
        + f'<p class="note">Amounts rounded to the currency\'s minor unit, costs per unit to '
        f"{UNIT_COST_DIGITS} significant digits; hover for the exact value, or open the exact "
        "values below.</p>" + exact_table(rows)
    )


def _utilization_section(data: HtmlReportData) -> str:
    out = ["<section><h2>GPU busy fraction per resource</h2>"]
    if not data.resources:
        out.append("<p>No resources in this selection.</p></section>")
        return "".join(out)
    by_cost = sorted(data.resources, key=lambda r: (-r.cost, r.resource))
    names: list[str] = []
    for r in by_cost:
        if r.resource not in names:
            names.append(r.resource)
    shown = names[:MAX_RESOURCES]
    cells = {(c.resource, c.start): c for c in data.utilization if c.resource in set(shown)}
    times = _steps(data, (c.start for c in data.utilization))
    out.append(
        '<div class="heat">0 %<span class="ramp"></span>100 % busy, per '
        f"{esc(_step_words(data.step_seconds))} "
        "(hover a cell for busy fraction, cost and idle cost)</div>"
    )
    out.append(heatmap("utilization", times, shown, cells, data.step_seconds))
    if len(names) > MAX_RESOURCES:
        out.append(
            f'<p class="note">The {MAX_RESOURCES} resources of the highest cost are shown, '
            f"of {len(names)}.</p>"
        )
    for cur in sorted({r.currency for r in data.resources}):
        idle_rows = sorted(
            (r for r in data.resources if r.currency == cur),
            key=lambda r: (-r.idle_cost, r.resource),
        )[:MAX_RESOURCES]
        out.append(f"<h3>Idle cost per resource ({esc(cur)})</h3>")
        out.append(
            hbars(
                f"idle-{cur}",
                [(r.resource, [r.idle_cost]) for r in idle_rows],
                ["#c0504d"],
                ["idle cost"],
                cur,
            )
        )
    headers = ["resource", "currency", "cost", "idle cost", "idle % of cost", "busy fraction"]
    rows = [
        [
            esc(r.resource),
            esc(r.currency),
            money(r.cost, r.currency),
            money(r.idle_cost, r.currency),
            esc(percent(r.idle_cost / r.cost) if r.cost else ""),
            f'<span title="{esc(exact(r.busy_fraction))}">{esc(percent(r.busy_fraction))}</span>',
        ]
        for r in by_cost
    ]
    out.append(
        f"<details><summary>every resource ({len(by_cost)})</summary>"
        f"{table(headers, rows, numeric=range(2, 6))}</details>"
    )
    out.append("</section>")
    return "".join(out)


def _reconciliation_section(data: HtmlReportData) -> str:
    rows = data.reconciliation
    out = ["<section><h2>Provisional (rates) versus billed, per tenant</h2>"]
    if not rows:
        out.append("<p>No ledger entries in this selection.</p></section>")
        return "".join(out)
    headers = [
        "tenant",
        "currency",
        "provisional",
        "reconciliation",
        "billed",
        "change",
        "completions",
        "billed per completion",
    ]
    cells = []
    for r in rows:
        cur = r["currency"]
        prov = r["provisional"]
        change = r["reconciliation"] / prov if prov else None
        cells.append(
            [
                esc(r["tenant"]),
                esc(cur),
                money(prov, cur),
                money(r["reconciliation"], cur),
                money(r["billed"], cur),
                esc(percent(change)),
                f"{r['completions'] or 0:,}",
                unit_cost(r["billed_per_completion"], cur),
            ]
        )
    out.append(table(headers, cells, numeric=range(2, 8)))
    out.append(
        '<p class="note">provisional: the entries priced by rates (usage, idle, late adjustments); '
        "reconciliation: the entries that bring them to the bill; billed: their sum, what the "
        "ledger holds. Without a bill, billed equals provisional.</p>"
    )
    out.append(exact_table(rows))
    out.append("</section>")
    return "".join(out)


def _budget_section(data: HtmlReportData) -> str:
    if data.budgets is None:
        return ""
    out = ["<section><h2>Budgets (current period, UTC) and recent alerts</h2>"]
    if data.budgets:
        headers = [
            "name",
            "tenant",
            "period",
            "from",
            "budget",
            "spend",
            "spent",
            "forecast",
            "alerts fired",
        ]
        cells = []
        for b in data.budgets:
            cur = b["currency"]
            spent = b.get("spent_percent")
            cells.append(
                [
                    esc(b["name"]),
                    esc(b["tenant_id"]),
                    esc(b["period"]),
                    esc(b["period_start"]),
                    money(b["budget"], cur) + f" {esc(cur)}",
                    money(b["spend"], cur),
                    esc("" if spent is None else f"{float(spent):.1f} %"),
                    money(b.get("forecast_spend"), cur),
                    esc(b.get("alerts_fired")),
                ]
            )
        out.append(table(headers, cells, numeric=range(4, 9)))
    else:
        out.append("<p>No budget in force (deleted budgets keep their alerts).</p>")
    if data.alerts:
        headers = ["fired (UTC)", "kind", "tenant", "about", "spend", "text"]
        cells = [
            [
                esc(a["fired_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")),
                esc(a["kind"]),
                esc(a["tenant_id"]),
                esc(_alert_limit(a)),
                money(a["spend"], a["currency"]) + f" {esc(a['currency'])}",
                esc(a["text"]),
            ]
            for a in data.alerts
        ]
        out.append(f"<h3>Recent alerts ({len(data.alerts)}, newest first)</h3>")
        out.append(table(headers, cells, numeric=[4]))
    else:
        out.append("<p>No alert fired yet.</p>")
    out.append("</section>")
    return "".join(out)


def _alert_limit(a: dict[str, Any]) -> str:
    if a["kind"] == "threshold" and a.get("threshold") is not None:
        return f"threshold {format((a['threshold'] * 100).normalize(), 'f')} %"
    if a["kind"] == "forecast" and a.get("forecast_spend") is not None:
        return f"forecast {round_money(a['forecast_spend'], a['currency'])}"
    if a.get("observed") is not None and a.get("baseline") is not None:
        observed = round_unit_cost(a["observed"], a["currency"])
        return f"{observed} vs {round_unit_cost(a['baseline'], a['currency'])} per completion"
    return ""


def _footer(data: HtmlReportData) -> str:
    return (
        '<p class="note">Made by <code>inferledger report --format html</code> from the ledger '
        "(ledger_entries, v_cost_per_completion_with_idle, v_gpu_utilization's arithmetic, "
        "v_budget_status). Amounts are rounded for reading (the currency's minor unit; costs "
        f"per unit to {UNIT_COST_DIGITS} significant digits): hover any figure for its exact "
        'value, or open an "exact values" table. UTC throughout. This page fetches nothing '
        "and runs no script.</p>"
    )
