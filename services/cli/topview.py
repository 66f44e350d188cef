"""``inferledger top``'s screen, as a pure function of a :class:`Snapshot` (no scrape, no SQL,
no terminal): :func:`render` gives a rich renderable, :func:`render_text` the same as plain
text (``--once`` and the tests)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from services.ledger.recent import RecentSpend
from services.ledger.rounding import round_money
from services.runtime.scrape import PipelineView

IDLE = "idle"
"""How the spend table labels idle cost (entries of no tenant)."""
MAX_PARTITIONS = 8
"""Watermark rows shown at most (the oldest first); the rest are counted."""


@dataclass(frozen=True)
class Snapshot:
    """Everything one screen shows: the processors' figures, the ledger's last hour (or why
    it could not be read), where the endpoints came from, and the refresh interval."""

    pipeline: PipelineView
    spend: RecentSpend | None
    spend_error: str | None = None
    source: str = ""
    interval: float = 1.0
    names: Mapping[str, str] = field(default_factory=dict)  # URL -> component, where known


def duration(seconds: float) -> str:
    """An age for reading: 45 s, 12 min, 5.2 h, 3 d, 2.1 y (negative: ahead of the clock)."""
    if seconds < 0:
        return f"-{duration(-seconds)}"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365.25 * 86400:
        return f"{seconds / 86400:.0f} d"
    return f"{seconds / (365.25 * 86400):.1f} y"


def per_second(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


class _Section:
    """A titled table: the title on its own line (never wrapped to the table's width)."""

    def __init__(self, title: str, *columns: str, right: tuple[int, ...] = ()) -> None:
        self.title = title
        self.table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, name in enumerate(columns):
            self.table.add_column(name, justify="right" if i in right else "left", no_wrap=True)

    def add_row(self, *cells: RenderableType) -> None:
        self.table.add_row(*cells)

    def done(self) -> RenderableType:
        return Group(Text(self.title, style="bold"), self.table, Text(""))


def _table(title: str, *columns: str, right: tuple[int, ...] = ()) -> _Section:
    return _Section(title, *columns, right=right)


def _processors(view: PipelineView, names: Mapping[str, str]) -> RenderableType:
    if not view.endpoints:
        return Text(
            "no processors to watch: give --metrics URL, start `inferledger up`, or set "
            "INFERLEDGER_METRICS_LISTEN"
        )
    table = _table("processors", "component", "/metrics", "status", "health", "dependencies")
    for e in view.endpoints:
        if e.error is not None:
            status, health = Text(f"down ({e.error})", style="bold red"), Text("-")
        else:
            status = Text("up", style="green")
            health = Text(
                "-" if e.healthy is None else ("healthy" if e.healthy else "UNHEALTHY"),
                style="green" if e.healthy else "bold red",
            )
        deps = ", ".join(f"{d} {'up' if ok else 'DOWN'}" for d, ok in e.dependencies) or "-"
        table.add_row(e.component or names.get(e.url, "?"), e.url, status, health, deps)
    return table.done()


def _flow(view: PipelineView) -> RenderableType:
    table = _table("flow", "", "rate", "total", right=(1, 2))
    table.add_row("events in (accepted)", per_second(view.events_per_s), count(view.events_total))
    table.add_row(
        "ledger entries out (written)", per_second(view.entries_per_s), count(view.entries_total)
    )
    table.add_row("buckets closed", per_second(view.closed_per_s), count(view.closed_total))
    return table.done()


def _lag(view: PipelineView) -> RenderableType:
    if not view.lag:
        return Text("consumer lag: - (no consumer reports one yet)")
    table = _table("consumer lag (messages, all partitions)", "component", "topic", "lag",
                   right=(2,))  # fmt: skip
    for component, topic, n in view.lag:
        table.add_row(component, topic, count(n))
    return table.done()


def _watermarks(view: PipelineView) -> RenderableType:
    through = (
        ""
        if view.closed_through_age is None
        else f"; buckets closed through {duration(view.closed_through_age)} ago"
    )
    oldest = view.oldest_watermark_age
    if oldest is None:
        return Text(f"watermark age: - (no events seen yet){through}")
    table = _table(
        f"watermark age (wall clock now - event-time watermark): oldest {duration(oldest)}"
        + through,
        "topic",
        "partition",
        "age",
        right=(2,),
    )
    rows = sorted(view.watermark_ages, key=lambda r: -r[2])
    for topic, partition, age in rows[:MAX_PARTITIONS]:
        table.add_row(topic, partition, duration(age))
    if len(rows) > MAX_PARTITIONS:
        table.add_row(f"... {len(rows) - MAX_PARTITIONS} more partitions", "", "")
    return table.done()


def _dead_letters(view: PipelineView) -> RenderableType:
    if not view.dead_letters:
        return Text("dead letters: none")
    table = _table("dead letters", "component", "reason", "total", "since top started",
                   right=(2, 3))  # fmt: skip
    for d in view.dead_letters:
        since = Text(f"+{d.since_start:,.0f}", style="bold red" if d.since_start else "")
        table.add_row(d.component, d.reason, count(d.total), since)
    return table.done()


def _spend(snapshot: Snapshot) -> RenderableType:
    if snapshot.spend_error is not None:
        return Text(f"spend of the last hour: {snapshot.spend_error}", style="bold red")
    spend = snapshot.spend
    if spend is None or spend.end is None or spend.start is None:
        return Text("spend of the last hour: the ledger is empty")
    ago = duration(snapshot.pipeline.at - spend.end.timestamp())
    table = _table(
        "spend of the last hour of event time, per tenant (the hour ending at the ledger's "
        f"latest bucket end, {ago} ago)\nbuckets from {_stamp(spend.start)} to "
        f"{_stamp(spend.end)} UTC",
        "tenant",
        "currency",
        "amount",
        right=(2,),
    )
    totals: dict[str, Decimal] = {}
    for tenant, currency, amount in spend.rows:
        table.add_row(IDLE if tenant is None else tenant, currency, round_money(amount, currency))
        totals[currency] = totals.get(currency, Decimal(0)) + amount
    for currency, amount in sorted(totals.items()):
        table.add_row(Text("total", style="bold"), currency, round_money(amount, currency))
    return table.done()


def render(snapshot: Snapshot) -> RenderableType:
    """The whole screen."""
    view = snapshot.pipeline
    at = datetime.fromtimestamp(view.at, UTC)
    header = Text(
        f"inferledger top  {_stamp(at)} UTC  every {snapshot.interval:g} s"
        + (f"  processors from {snapshot.source}" if snapshot.source else ""),
        style="bold",
    )
    return Group(
        header,
        _processors(view, snapshot.names),
        _flow(view),
        _lag(view),
        _watermarks(view),
        _dead_letters(view),
        _spend(snapshot),
    )


def render_text(snapshot: Snapshot, width: int = 120) -> str:
    """The screen as plain text (no colours, no terminal)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(render(snapshot))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)
