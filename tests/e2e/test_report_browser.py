"""The HTML report in a real browser: headless Chromium (installed where missing: never a skip)
loads ``inferledger report --format html`` of the worked example, fed through the CLI, and the
page is checked as a person's browser shows it: no console error, no network request, every
chart drawn with its series, the totals printed equal to the ledger's, and no horizontal
scrolling of the page at 1024 px. A full-page screenshot is left in the test's tmp_path.

The browser checks are checked too: a page with a console error, an uncaught exception and an
external image is caught; a hostile tenant id stays text."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from services.ledger.htmlreport import HtmlReportData, SpendPoint, Total, render_html
from tests.browser import inspect_page
from tests.helpers import cli, query_rows

DATA = Path(__file__).resolve().parents[1] / "data"
CHARTS = (
    "[...document.querySelectorAll('svg.chart')].map(s => ({"
    "chart: s.dataset.chart, series: +s.dataset.series, points: +s.dataset.points,"
    "shapes: s.querySelectorAll('rect,circle,polyline').length,"
    "width: s.getBoundingClientRect().width, height: s.getBoundingClientRect().height}))"
)
TOTALS = (
    "[...document.querySelectorAll('[data-total]')].map(e => "
    "[e.dataset.total, e.dataset.currency, e.dataset.exact, e.textContent.trim()])"
)
PAGE = {
    "charts": CHARTS,
    "totals": TOTALS,
    "scroll_width": "document.documentElement.scrollWidth",
    "client_width": "document.documentElement.clientWidth",
    "scripts": "document.scripts.length",
    "tables_wider_than_page": (
        "[...document.querySelectorAll('table')].filter(t => "
        "t.getBoundingClientRect().right > document.documentElement.clientWidth && "
        "getComputedStyle(t.parentElement).overflowX !== 'auto').length"
    ),
    "text": "document.body.innerText",
}


def test_the_worked_examples_report_in_a_real_browser(cli_env, settings, tmp_path):
    cli(cli_env, "ingest", "rates", str(DATA / "worked_example_rates.jsonl"))
    cli(cli_env, "ingest", "events", str(DATA / "worked_example_events.jsonl"))
    cli(cli_env, "run", "all", "--until-idle")
    cli(cli_env, "budget", "set", "--name", "acme monthly", "--tenant", "acme", "--period",
        "month", "--amount", "100", "--include-idle-share")  # fmt: skip
    page = tmp_path / "report.html"
    out = cli(cli_env, "report", "--format", "html", "--output", str(page))
    assert out.stdout.strip() == str(page.resolve())

    shot = tmp_path / "report.png"
    seen = inspect_page(page.as_uri(), widths=(1280, 1024), expressions=PAGE, screenshot=shot)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for width, result in seen.items():
        assert result.errors == [], (width, result.errors)
        assert result.requests == [page.as_uri()], (width, result.requests)  # nothing fetched
        assert result.values["scripts"] == 0
        # no horizontal scrolling of the page; wide tables scroll in their own box
        assert result.values["scroll_width"] <= width, (width, result.values["scroll_width"])
        assert result.values["tables_wider_than_page"] == 0, width

    values = seen[1024].values
    charts = {c["chart"]: c for c in values["charts"]}
    # series: acme, beta and idle; the tenants' bars: busy and idle share; the lines: the three
    # tenant and model pairs; one resource, node-1, in one 5-minute step (2 minutes of data)
    assert {name: (c["series"], c["points"]) for name, c in charts.items()} == {
        "spend-USD": (3, 1),
        "tenant-spend-USD": (2, 2),
        "cost-per-completion-USD": (3, 1),
        "cost-per-1k-tokens-USD": (3, 1),
        "utilization": (1, 1),
        "idle-USD": (1, 1),
    }
    for name, c in charts.items():
        assert c["shapes"] >= c["series"] and c["width"] > 300 and c["height"] > 30, (name, c)

    [(ledger_total, ledger_idle)] = query_rows(
        settings.database_url,
        "SELECT sum(amount), sum(amount) FILTER (WHERE tenant_id IS NULL) FROM ledger_entries",
    )
    totals = {kind: (cur, Decimal(v), text) for kind, cur, v, text in values["totals"]}
    assert totals == {
        "total": ("USD", ledger_total, "1.20 USD"),
        "busy": ("USD", ledger_total - ledger_idle, "0.50 USD"),
        "idle": ("USD", ledger_idle, "0.70 USD 58.3 % of cost"),
    }
    assert ledger_total == Decimal("1.200000000000") and ledger_idle == Decimal("0.7")
    text = values["text"]
    assert "2024-01-01 .. 2024-01-01 (UTC days, both included" in text
    assert "latest bucket closed 2024-01-01 00:02 UTC" in text
    assert "0.277992" in text and "0.667181" in text  # busy and with idle, acme / llama-70b
    assert "acme monthly" in text and "No alert fired yet." in text
    assert "0.277992277992" not in text  # 12 decimals only in the closed exact tables
    assert "Unpriced usage" not in text


def test_a_hostile_tenant_id_stays_text_in_the_browser(tmp_path):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    t = datetime(2024, 1, 1, tzinfo=UTC)
    data = HtmlReportData(
        title=f"report of {hostile}",
        generated_at=t,
        first_day=t.date(),
        last_day=t.date(),
        tenant=hostile,
        data_from=t,
        data_to=t,
        step_seconds=300,
        totals=[Total("USD", Decimal("1"), Decimal(0))],
        spend=[SpendPoint(t, hostile, "USD", Decimal("1"))],
        per_completion=[
            {
                "tenant_id": hostile,
                "model": hostile,
                "currency": "USD",
                "completions": 1,
                "amount": Decimal(1),
                "cost_per_completion": Decimal(1),
                "cost_per_1k_tokens": None,
                "has_unpriced": False,
            }
        ],  # fmt: skip
        notes=[hostile],
    )
    page = tmp_path / "hostile.html"
    page.write_text(render_html(data))
    expressions = {
        "scripts": "document.scripts.length",
        "images": "document.images.length",
        "text": "document.body.innerText",
    }
    [result] = inspect_page(page.as_uri(), expressions=expressions).values()
    assert result.errors == [] and result.dialogs == []
    assert result.values["scripts"] == 0 and result.values["images"] == 0
    assert result.values["text"].count(hostile) >= 3  # shown as the text it is
    assert result.requests == [page.as_uri()]


def test_the_browser_checks_catch_errors_and_fetches(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!doctype html><html><body><p>bad</p>"
        "<script>console.error('drawn wrong'); null.x;</script>"
        '<img src="http://127.0.0.1:9/nothing.png"></body></html>'
    )
    [result] = inspect_page(bad.as_uri()).values()
    assert any("drawn wrong" in e for e in result.console), result
    assert any("TypeError" in e for e in result.exceptions), result
    assert "http://127.0.0.1:9/nothing.png" in result.requests
    assert result.log_errors, result  # the failed load
