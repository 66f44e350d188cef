"""The HTML report's renderer (services.ledger.htmlreport), pure: escaping of every string from
the database, amounts rounded for reading with the exact value beside, empty data, one series,
many tenants and resources capped and said so, the step of the time axis."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

from services.ledger.htmlreport import (
    MAX_RESOURCES,
    MAX_SERIES,
    HtmlReportData,
    ResourceTotal,
    SpendPoint,
    Total,
    UnitCostPoint,
    UtilCell,
    render_html,
    step_for,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"


class Tags(HTMLParser):
    """Every start tag and its attributes, and the text, as a browser's parser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def charts(page: str) -> dict[str, dict[str, str | None]]:
    return {a["data-chart"] or "": a for t, a in parse(page).tags if t == "svg"}


def row(tenant: str | None, model: str | None, amount: str, idle: str = "0", **kw: object):
    amount_d, idle_d = Decimal(amount), Decimal(idle)
    base: dict[str, object] = {
        "tenant_id": tenant, "model": model, "currency": "USD", "completions": 3,
        "amount": amount_d, "cost_per_completion": (amount_d / 3).quantize(Decimal("1e-12")),
        "cost_per_1k_tokens": None, "has_unpriced": False, "idle_share": idle_d,
        "amount_with_idle": amount_d + idle_d,
        "cost_per_completion_with_idle": ((amount_d + idle_d) / 3).quantize(Decimal("1e-12")),
        "cost_per_1k_tokens_with_idle": None, "unshared_idle": False,
    }  # fmt: skip
    base.update(kw)
    return base


def worked_example(**over: object) -> HtmlReportData:
    data = HtmlReportData(
        title="report",
        generated_at=T0 + timedelta(days=1),
        first_day=T0.date(),
        last_day=T0.date(),
        step_seconds=300,
        data_from=T0,
        data_to=T0 + timedelta(minutes=2),
        fresh_until=T0 + timedelta(minutes=2),
        totals=[Total("USD", Decimal("1.200000000000"), Decimal("0.700000000000"), 3)],
        spend=[
            SpendPoint(T0, "acme", "USD", Decimal("0.416602316602")),
            SpendPoint(T0, "beta", "USD", Decimal("0.083397683398")),
            SpendPoint(T0, None, "USD", Decimal("0.700000000000")),
        ],
        unit_costs=[
            UnitCostPoint(T0, "acme", "llama-70b", "USD", 1, 1200, Decimal("0.277992277992")),
        ],
        utilization=[
            UtilCell("node-1", T0, "USD", Decimal("0.416667"), Decimal("1.2"), Decimal("0.7"))
        ],
        resources=[
            ResourceTotal("node-1", "USD", Decimal("1.2"), Decimal("0.7"), Decimal("0.416667"))
        ],
        per_completion=[row("acme", "llama-70b", "0.277992277992", "0.389189189189")],
        reconciliation=[
            {
                "tenant": "acme",
                "currency": "USD",
                "provisional": Decimal("0.5"),
                "reconciliation": Decimal("-0.1"),
                "billed": Decimal("0.4"),
                "completions": 2,
                "billed_per_completion": Decimal("0.2"),
            },
        ],  # fmt: skip
    )
    for k, v in over.items():
        setattr(data, k, v)
    return data


def test_every_string_from_the_database_is_escaped():
    data = worked_example(
        title=HOSTILE,
        tenant=HOSTILE,
        model=HOSTILE,
        notes=[HOSTILE],
        spend=[SpendPoint(T0, HOSTILE, "USD", Decimal(1)), SpendPoint(T0, None, "USD", Decimal(1))],
        unit_costs=[UnitCostPoint(T0, HOSTILE, HOSTILE, "USD", 1, 10, Decimal(1))],
        utilization=[UtilCell(HOSTILE, T0, "USD", Decimal("0.5"), Decimal(1), Decimal(0))],
        resources=[ResourceTotal(HOSTILE, "USD", Decimal(1), Decimal(0), Decimal("0.5"))],
        per_completion=[row(HOSTILE, HOSTILE, "1")],
        reconciliation=[
            {"tenant": HOSTILE, "currency": "USD", "provisional": Decimal(1),
             "reconciliation": Decimal(0), "billed": Decimal(1), "completions": 1,
             "billed_per_completion": Decimal(1)},
        ],  # fmt: skip
        budgets=[
            {"name": HOSTILE, "tenant_id": HOSTILE, "period": "day", "period_start": T0.date(),
             "budget": Decimal(10), "currency": "USD", "spend": Decimal(1),
             "spent_percent": Decimal("10.0"), "forecast_spend": None, "alerts_fired": 1},
        ],
        alerts=[
            {"fired_at": T0, "kind": "threshold", "tenant_id": HOSTILE,
             "threshold": Decimal("0.8"), "spend": Decimal(8), "currency": "USD",
             "text": HOSTILE},
        ],
    )  # fmt: skip
    page = render_html(data)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    tags = parse(page)
    assert not [t for t, _ in tags.tags if t in ("script", "img", "iframe", "object")]
    assert not [a for _, a in tags.tags for name in a if name.startswith("on")]
    text = "".join(tags.text)
    assert text.count(HOSTILE) >= 8  # read back as the very text it was
    # and the page forbids scripts and fetches anyway
    [csp] = [a["content"] for t, a in tags.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp and "script-src" not in csp


def test_amounts_are_rounded_for_reading_with_the_exact_value_beside():
    page = render_html(worked_example())
    tags = parse(page)
    text = "".join(tags.text)
    assert "1.20 USD" in text and "0.70 USD" in text and "58.3 % of cost" in text
    assert "0.277992" in text and "0.667181" in text  # busy and with idle per completion
    # 12 decimals only in tooltips and in the closed "exact values" tables
    outside = re.sub(r"<details>.*?</details>", "", page, flags=re.S)
    visible = "".join(parse(re.sub(r"<title>.*?</title>", "", outside, flags=re.S)).text)
    assert not re.search(r"\d\.\d{9,}", visible), re.findall(r"\d\.\d{9,}", visible)
    assert not re.search(r"\d\.\d{3,} %", visible)  # never "18.3800 %"
    assert 'data-exact="1.200000000000"' in page and 'title="0.277992277992"' in page
    assert "<details><summary>exact values</summary>" in page and "0.389189189189" in page
    totals = {a["data-total"]: a["data-exact"] for _, a in tags.tags if "data-total" in a}
    assert totals == {"total": "1.200000000000", "busy": "0.500000000000", "idle": "0.700000000000"}


def test_currency_minor_units_are_kept():
    data = worked_example(totals=[Total("JPY", Decimal("1234.5"), Decimal("34.5"))])
    text = "".join(parse(render_html(data)).text)
    assert "1235 JPY" in text and "35 JPY" in text  # half away from zero, no decimals


def test_no_data_is_said_not_drawn():
    page = render_html(HtmlReportData(title="empty", generated_at=T0))
    text = "".join(parse(page).text)
    assert "no data in this selection" in text and "nothing in the ledger yet" in text
    assert "No ledger entries in this selection." in text
    assert "No completions in this selection." in text and "No resources" in text
    assert charts(page) == {}
    assert "Budgets" not in text  # none set: no section


def test_one_series_of_one_point_is_drawn_as_a_point():
    page = render_html(worked_example())
    found = charts(page)
    assert found["spend-USD"]["data-series"] == "3" and found["spend-USD"]["data-points"] == "1"
    line = found["cost-per-completion-USD"]
    assert line["data-series"] == "1" and line["data-points"] == "1"
    assert "cost-per-1k-tokens-USD" in found  # an empty chart when no tokens: still drawn
    assert found["utilization"]["data-series"] == "1"
    assert found["idle-USD"]["data-series"] == "1" and found["idle-USD"]["data-points"] == "1"
    assert "<circle" in page  # one point: a marker, no line


def test_many_tenants_and_resources_are_capped_and_the_page_says_so():
    tenants = [f"tenant-{i:03d}" for i in range(25)]
    resources = [f"node-{i:03d}" for i in range(60)]
    spend = [
        SpendPoint(T0 + timedelta(hours=h), t, "USD", Decimal(i + 1))
        for h in range(48)
        for i, t in enumerate(tenants)
    ] + [SpendPoint(T0 + timedelta(hours=h), None, "USD", Decimal(3)) for h in range(48)]
    units = [
        UnitCostPoint(T0 + timedelta(hours=h), t, "m", "USD", 2, 100, Decimal(i + 1))
        for h in range(48)
        for i, t in enumerate(tenants)
    ]
    cells = [
        UtilCell(r, T0 + timedelta(hours=h), "USD", Decimal("0.5"), Decimal(i), Decimal(1))
        for h in range(48)
        for i, r in enumerate(resources)
    ]
    totals = [
        ResourceTotal(r, "USD", Decimal(i), Decimal(i % 7), None) for i, r in enumerate(resources)
    ]
    data = worked_example(
        step_seconds=3600,
        data_to=T0 + timedelta(hours=48),
        spend=spend,
        unit_costs=units,
        utilization=cells,
        resources=totals,
        per_completion=[row(t, "m", "1") for t in tenants],
    )
    page = render_html(data)
    found = charts(page)
    # 9 tenants of the highest spend, "other tenants" and idle
    assert found["spend-USD"]["data-series"] == str(MAX_SERIES + 1)
    assert found["spend-USD"]["data-points"] == "48"
    assert "other tenants (16)" in page and "16 others are summed as one band" in page
    assert found["cost-per-completion-USD"]["data-series"] == str(MAX_SERIES)
    assert f"are drawn, of {len(tenants)}" in page
    assert found["utilization"]["data-series"] == str(MAX_RESOURCES)
    assert f"The {MAX_RESOURCES} resources of the highest cost are shown, of 60." in page
    # the highest cost first: node-059 is shown, node-000 is not
    heat = page[page.index('data-chart="utilization"') :]
    heat = heat[: heat.index("</svg>")]
    assert "node-059" in heat and "node-000" not in heat
    assert found["tenant-spend-USD"]["data-points"] == "25"  # every tenant in the bars
    assert page.count("<tr>") >= 25 + 60  # and in the tables


def test_unpriced_usage_and_filters_are_flagged():
    data = worked_example(
        tenant="acme",
        totals=[Total("USD", Decimal("0.5"), Decimal(0), 3, unpriced_entries=2)],
        per_completion=[row("acme", "m", "0", has_unpriced=True)],
    )
    page = render_html(data)
    assert 'data-unpriced="2"' in page and "missing, not zero" in page
    assert "<b>unpriced</b>" in page
    assert "tenant acme, all models" in page and "Idle GPU time belongs to no tenant" in page


def test_the_time_step_suits_the_span():
    assert step_for(timedelta(minutes=2)) == 300
    assert step_for(timedelta(hours=6)) == 300
    assert step_for(timedelta(hours=7)) == 3600
    assert step_for(timedelta(days=3)) == 3600
    assert step_for(timedelta(days=3, seconds=1)) == 86400
    assert step_for(timedelta(hours=1), bucket_seconds=4 * 3600) == 4 * 3600  # never < a bucket
