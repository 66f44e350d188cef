"""Budget alert rules (services.accounting.budgets): periods, ids, thresholds, forecast, anomaly."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.accounting import (
    DEFAULT_RULES,
    AlertRules,
    AnomalyFinding,
    Budget,
    HourPoint,
    Period,
    alert_id,
    alert_text,
    anomaly_due,
    anomaly_subject,
    forecast_due,
    forecast_spend,
    period_bounds,
    threshold_str,
    thresholds_due,
)

D = Decimal
H = timedelta(hours=1)
US = timedelta(microseconds=1)
PERIODS: list[Period] = ["day", "week", "month"]
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-8 * H)])
# hypothesis takes naive bounds and attaches the zones itself
LOW, HIGH = datetime(1971, 1, 1), datetime(9998, 12, 1)  # noqa: DTZ001
AWARE = st.datetimes(min_value=LOW, max_value=HIGH, timezones=ZONES)
MONEY = st.decimals(min_value=-1000, max_value=10**6, places=2)
POSITIVE = st.decimals(min_value=D("0.01"), max_value=10**6, places=2)
THRESHOLDS = st.lists(
    st.decimals(min_value=D("0.01"), max_value=D("2"), places=2),
    min_size=1,
    max_size=6,
    unique=True,
).map(lambda ts: tuple(sorted(ts)))


def u(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def budget(amount: str = "1000", **kw: object) -> Budget:
    args: dict[str, object] = {"budget_id": "b1", "tenant_id": "acme", "period": "month"}
    args.update(kw)
    return Budget(amount=D(amount), **args)  # type: ignore[arg-type]


# -- periods -----------------------------------------------------------------------------------


@given(st.sampled_from(PERIODS), AWARE)
def test_period_contains_at_is_aligned_and_tiles(period: Period, at: datetime) -> None:
    start, end = period_bounds(period, at)
    assert start.tzinfo is UTC and end.tzinfo is UTC
    assert start <= at < end
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert period_bounds(period, start) == (start, end)
    assert period_bounds(period, end - US) == (start, end)
    assert period_bounds(period, end)[0] == end  # the next period starts where this one ends
    assert period_bounds(period, start - US)[1] == start
    if period == "day":
        assert end - start == timedelta(days=1)
    elif period == "week":
        assert start.isoweekday() == 1 and end - start == timedelta(days=7)
    else:
        days = calendar.monthrange(start.year, start.month)[1]
        assert start.day == 1 and end - start == timedelta(days=days)


@pytest.mark.parametrize(
    ("at", "period", "start", "end"),
    [
        (datetime(2024, 2, 10, tzinfo=UTC), "month", u(2024, 2, 1), u(2024, 3, 1)),
        (datetime(2100, 2, 10, tzinfo=UTC), "month", u(2100, 2, 1), u(2100, 3, 1)),
        (
            datetime(2026, 12, 31, 23, tzinfo=UTC),
            "month",
            u(2026, 12, 1),
            u(2027, 1, 1),
        ),
        (
            datetime(2026, 11, 1, 3, tzinfo=UTC),
            "week",
            u(2026, 10, 26),
            u(2026, 11, 2),
        ),
        # 01:00 at +05:30 on the 2nd is 19:30 UTC on the 1st
        (
            datetime(2026, 11, 2, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "day",
            u(2026, 11, 1),
            u(2026, 11, 2),
        ),
    ],
)
def test_period_examples(at: datetime, period: Period, start: datetime, end: datetime) -> None:
    assert period_bounds(period, at) == (start, end)


def test_leap_february_has_29_days() -> None:
    start, end = period_bounds("month", datetime(2000, 2, 29, 12, tzinfo=UTC))
    assert end - start == timedelta(days=29)


def test_period_rejects_naive_and_unknown() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds("day", datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="period must be one of"):
        period_bounds("year", datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]


# -- budgets -----------------------------------------------------------------------------------


def test_budget_defaults() -> None:
    b = budget()
    assert b.thresholds == (D("0.5"), D("0.8"), D("1.0"))
    assert (b.currency, b.include_idle_share, b.webhooks, b.name) == ("USD", False, (), None)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"budget_id": ""}, "budget_id"),
        ({"tenant_id": ""}, "tenant_id"),
        ({"period": "year"}, "period must be one of"),
        ({"amount": D(0)}, "amount must be > 0"),
        ({"amount": D("-5")}, "amount must be > 0"),
        ({"amount": D("NaN")}, "finite Decimal"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "US1"}, "currency"),
        ({"thresholds": ()}, "non-empty"),
        ({"thresholds": (D("0.8"), D("0.5"))}, "ascending"),
        ({"thresholds": (D("0.8"), D("0.80"))}, "ascending"),
        ({"thresholds": (D(0), D("0.5"))}, "> 0"),
        ({"thresholds": (0.5,)}, "finite Decimal"),
        ({"webhooks": ("ftp://x/y",)}, "http"),
        ({"webhooks": ("https://",)}, "http"),
        ({"webhooks": ["https://x"]}, "tuple"),
        ({"name": "  "}, "name"),
    ],
)
def test_budget_validation(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"budget_id": "b1", "tenant_id": None, "period": "day"}
    args["amount"] = D(10)
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        Budget(**args)  # type: ignore[arg-type]


def test_budget_accepts_all_tenants_and_over_100_percent() -> None:
    b = budget(tenant_id=None, thresholds=(D("1"), D("1.2")), webhooks=("http://h:8080/x",))
    assert b.tenant_id is None and b.thresholds[-1] == D("1.2")


# -- alert ids ---------------------------------------------------------------------------------

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_alert_id_is_deterministic_and_normalized() -> None:
    a = alert_id("b1", START, "threshold", D("0.8"))
    assert len(a) == 32 and int(a, 16) >= 0
    assert (
        a
        == alert_id("b1", START, "threshold", D("0.80"))
        == alert_id("b1", START, "threshold", "0.800")
    )
    shifted = START.astimezone(timezone(-8 * H))
    assert alert_id("b1", shifted, "forecast") == alert_id("b1", START, "forecast")
    assert threshold_str(D("1.0")) == "1" and threshold_str(D("100")) == "100"
    assert threshold_str(D("0.50")) == "0.5"


def test_alert_id_rejects_bad_subjects() -> None:
    with pytest.raises(ValueError):
        alert_id("b1", START, "forecast", "x")
    with pytest.raises(ValueError):
        alert_id("b1", START, "anomaly")
    with pytest.raises(ValueError):
        alert_id("b1", START, "threshold", "")
    with pytest.raises(ValueError):
        alert_id("b1", START, "other")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        alert_id("b1", datetime(2026, 11, 1), "forecast")  # noqa: DTZ001


KEYS = st.tuples(
    st.text(max_size=6),
    st.sampled_from([START, START + timedelta(days=1), START + US]),
    st.sampled_from(["threshold", "forecast", "anomaly"]),
    st.text(min_size=1, max_size=6),
    st.decimals(min_value=D("0.01"), max_value=D(3), places=3),
)


def canonical(key: tuple[str, datetime, str, str, Decimal]) -> tuple[object, ...]:
    bid, start, kind, model, t = key
    subject = {"threshold": t.normalize(), "forecast": "", "anomaly": model}[kind]
    return (bid, start, kind, subject)


def make_id(key: tuple[str, datetime, str, str, Decimal]) -> str:
    bid, start, kind, model, t = key
    subject: str | Decimal = t if kind == "threshold" else model if kind == "anomaly" else ""
    return alert_id(bid, start, kind, subject)  # type: ignore[arg-type]


@given(KEYS, KEYS)
def test_alert_ids_differ_exactly_when_the_alerts_differ(a: tuple, b: tuple) -> None:
    assert (make_id(a) == make_id(b)) == (canonical(a) == canonical(b))


def test_alert_id_encoding_is_unambiguous() -> None:
    assert alert_id('a", "b', START, "anomaly", "m") != alert_id("a", START, "anomaly", 'b", "m')
    acme = budget(tenant_id=None)
    assert anomaly_subject(acme, "a/b", "c") != anomaly_subject(acme, "a", "b/c")
    assert anomaly_subject(budget(), "acme", "llama-70b") == "llama-70b"


# -- thresholds --------------------------------------------------------------------------------


def test_thresholds_worked_example() -> None:
    b = budget()
    assert thresholds_due(b, D("499.99"), frozenset()) == []
    assert thresholds_due(b, D("500.00"), frozenset()) == [D("0.5")]
    assert thresholds_due(b, D("812.40"), frozenset()) == [D("0.5"), D("0.8")]
    assert thresholds_due(b, D("812.40"), frozenset({D("0.50")})) == [D("0.8")]
    assert thresholds_due(b, D("1000"), frozenset({D("0.5"), D("0.8")})) == [D("1.0")]


def run_sequence(b: Budget, spends: list[Decimal]) -> list[Decimal]:
    fired: list[Decimal] = []
    for spend in spends:
        due = thresholds_due(b, spend, frozenset(fired))
        assert due == sorted(due)
        fired.extend(due)
    return fired


@given(POSITIVE, THRESHOLDS, st.lists(MONEY, min_size=1, max_size=12), st.randoms())
def test_each_threshold_fires_once_whatever_the_order(
    amount: Decimal, thresholds: tuple[Decimal, ...], spends: list[Decimal], rnd: object
) -> None:
    b = budget(amount=str(amount), thresholds=thresholds)
    expected = {t for t in thresholds if t * amount <= max(spends)}
    fired = run_sequence(b, spends)
    assert len(fired) == len(set(fired))  # exactly once: never re-armed by a later credit
    assert set(fired) == expected
    shuffled = list(spends)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert set(run_sequence(b, shuffled)) == expected


# -- forecast ----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 11, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)  # 20 days left


def test_forecast_worked_examples() -> None:
    b = budget()
    # 40 USD in the last 24 h: 40/day for 20 more days
    assert forecast_spend(D(400), D(40), 24 * H, NOW, END) == D(1200)
    assert forecast_due(b, D(400), D(40), 24 * H, NOW, END) == D(1200)
    assert forecast_spend(D(400), D(40), 72 * H, NOW, END) == D(1200)  # covered caps at 24 h
    assert forecast_spend(D(400), D(20), 12 * H, NOW, END) == D(1200)  # 12 h of data, same rate
    assert forecast_due(b, D(400), D(40), 24 * H, NOW, END, fired=True) is None
    assert forecast_due(b, D(400), D(30), 24 * H, NOW, END) is None  # 1000 exactly: not over
    assert forecast_due(b, D(1000), D(40), 24 * H, NOW, END) is None  # already spent: threshold
    assert forecast_spend(D(400), D(40), 59 * timedelta(minutes=1), NOW, END) is None
    one_h_left = END - H
    assert forecast_spend(D(0), D(1), 3 * H, one_h_left, END) == D("0.333333333333")
    assert forecast_spend(D(0), D(2), 3 * H, one_h_left, END) == D("0.666666666667")
    assert forecast_spend(D(5), D(-3), 3 * H, one_h_left, END) == D(4)  # a credit lowers it
    assert forecast_spend(D(5), D(9), 3 * H, END + H, END) == D(5)  # past the end: no time left


COVERED = st.integers(min_value=0, max_value=48 * 3600 * 10**6).map(lambda us: us * US)
MOMENT = st.integers(min_value=0, max_value=31 * 86400 * 10**6).map(lambda us: NOW + us * US)


def reference(spend: Decimal, trailing: Decimal, covered: timedelta, now: datetime) -> Fraction:
    covered = min(covered, 24 * H)
    remaining = max(END - now, timedelta(0))
    exact = Fraction(spend) + Fraction(trailing) * Fraction(remaining // US, covered // US)
    return round(exact, 12)  # Fraction rounds half to even


@given(MONEY, MONEY, MONEY, COVERED, MOMENT)
def test_forecast_is_the_documented_rule(
    spend: Decimal, t1: Decimal, t2: Decimal, covered: timedelta, now: datetime
) -> None:
    f1 = forecast_spend(spend, t1, covered, now, END)
    f2 = forecast_spend(spend, t2, covered, now, END)
    if min(covered, 24 * H) < H:  # never with too little data
        assert f1 is None and f2 is None
        assert forecast_due(budget(), spend, t1, covered, now, END) is None
        return
    assert f1 is not None and f2 is not None
    assert Fraction(f1) == reference(spend, t1, covered, now)
    if t1 <= t2:
        assert f1 <= f2  # monotone in the trailing spend
    assert forecast_spend(spend, t1, covered, END, END) == spend  # nothing left to burn
    b = budget(amount="5000")
    due = forecast_due(b, spend, t1, covered, now, END)
    assert due == (f1 if spend < b.amount < f1 else None)


# -- anomaly -----------------------------------------------------------------------------------

LATEST = datetime(2026, 11, 20, 10, tzinfo=UTC)


def hours(costs: list[Decimal], completions: int = 10) -> list[HourPoint]:
    """One point per hour going back from the hour before LATEST."""
    return [HourPoint(LATEST - (i + 1) * H, c, completions) for i, c in enumerate(costs)]


def test_anomaly_flat_baseline_needs_a_real_ten_percent_rise() -> None:
    base = hours([D("0.10")] * 24)  # 0.01 per completion, stddev 0
    assert anomaly_due(base, HourPoint(LATEST, D("0.109"), 10)) is None
    assert anomaly_due(base, HourPoint(LATEST, D("0.11"), 10)) == AnomalyFinding(
        baseline=D("0.01"), stddev=D(0), observed=D("0.011"), points=24
    )
    assert anomaly_due(base[:23], HourPoint(LATEST, D(1), 10)) is None  # 23 points: too few
    assert anomaly_due(base, HourPoint(LATEST, D(1), 4)) is None  # 4 completions: too few


def test_anomaly_three_sigma_worked_example() -> None:
    base = hours([D("0.1"), D("0.3")] * 12)  # 0.01 and 0.03: mean 0.02, stddev 0.01
    assert anomaly_due(base, HourPoint(LATEST, D("0.5"), 10)) is None  # 0.05: not above 3 sigma
    finding = anomaly_due(base, HourPoint(LATEST, D("0.501"), 10))
    assert finding == AnomalyFinding(D("0.02"), D("0.01"), D("0.0501"), 24)


def test_anomaly_window_and_empty_hours() -> None:
    base = hours([D("0.10")] * 23)
    latest = HourPoint(LATEST, D("0.2"), 10)
    oldest = HourPoint(LATEST - 7 * 24 * H, D("0.1"), 10)  # the first hour of the window counts
    assert anomaly_due([*base, oldest], latest) is not None
    too_old = HourPoint(LATEST - 7 * 24 * H - H, D("0.1"), 10)
    same_hour = HourPoint(LATEST, D("0.1"), 10)
    idle = HourPoint(LATEST - 100 * H, D("0.3"), 0)  # no completion: not a baseline point
    assert anomaly_due([*base, too_old, same_hour, idle], latest) is None
    with pytest.raises(ValueError, match="two points"):
        anomaly_due([*base, base[0]], latest)


CPC = st.decimals(min_value=D("0.0001"), max_value=D(10), places=4)


HIGH_CPC = st.one_of(CPC, st.decimals(min_value=1, max_value=100, places=4))


@given(st.lists(CPC, min_size=0, max_size=40), HIGH_CPC, st.integers(min_value=1, max_value=50))
def test_anomaly_properties(cpcs: list[Decimal], observed: Decimal, completions: int) -> None:
    base = hours([c * 10 for c in cpcs])
    finding = anomaly_due(base, HourPoint(LATEST, observed * completions, completions))
    if len(cpcs) < 24 or completions < 5:
        assert finding is None
        return
    mean = sum(cpcs, D(0)) / len(cpcs)
    if observed <= mean:
        assert finding is None
    if finding is not None:
        assert finding.observed == observed and finding.points == len(cpcs)
        assert observed > finding.baseline + 3 * finding.stddev - D("1e-11")
        assert observed >= D("1.1") * finding.baseline - D("1e-11")
        # a higher cost in the same hour is still an anomaly; the same rise at any scale too
        assert anomaly_due(base, HourPoint(LATEST, (observed + 1) * completions, completions))
        scaled = hours([c * 1000 for c in cpcs])
        assert anomaly_due(scaled, HourPoint(LATEST, observed * completions * 100, completions))


@given(CPC, st.integers(min_value=24, max_value=168), CPC)
def test_flat_baseline_fires_exactly_at_a_ten_percent_rise(
    cpc: Decimal, n: int, observed: Decimal
) -> None:
    finding = anomaly_due(hours([cpc * 10] * n), HourPoint(LATEST, observed * 5, 5))
    assert (finding is not None) == (observed >= D("1.1") * cpc)
    if finding is not None:
        assert (finding.baseline, finding.stddev, finding.points) == (cpc, D(0), n)


def test_rules_validation() -> None:
    assert DEFAULT_RULES.forecast_window == 24 * H and DEFAULT_RULES.anomaly_min_points == 24
    with pytest.raises(ValueError):
        AlertRules(forecast_min_data=48 * H)
    with pytest.raises(ValueError):
        AlertRules(anomaly_min_rise=D("0.9"))


# -- text --------------------------------------------------------------------------------------


def test_alert_texts() -> None:
    b = budget(name="acme monthly")
    assert alert_text("threshold", b, START, D("812.4"), threshold=D("0.80")) == (
        "Budget 'acme monthly' (acme, month from 2026-11-01): spend 812.40 USD reached 80 % "
        "of 1,000.00 USD."
    )
    assert alert_text("forecast", b, START, D("400"), forecast=D("1200.004")) == (
        "Budget 'acme monthly' (acme, month from 2026-11-01): spend 400.00 USD is forecast to "
        "reach 1,200.00 USD by 2026-12-01, over the budget of 1,000.00 USD."
    )
    finding = AnomalyFinding(D("0.02"), D("0.01"), D("0.0501234"), 24)
    assert alert_text("anomaly", b, START, D(300), finding=finding, model="llama-70b") == (
        "Budget 'acme monthly' (acme, month from 2026-11-01): cost per completion of llama-70b "
        "rose to 0.05012 USD, against a baseline of 0.02 ± 0.01 USD over 24 hours "
        "(spend 300.00 USD of 1,000.00 USD)."
    )
    everyone = budget(budget_id="b-<!channel>", tenant_id=None, period="week")
    week = datetime(2026, 11, 2, tzinfo=UTC)
    text = alert_text("anomaly", everyone, week, D(1), finding=finding, model="m", tenant_id="t")
    assert text.startswith("Budget 'b-&lt;!channel&gt;' (all tenants, week from 2026-11-02)")
    assert "of m for t rose" in text
    with pytest.raises(ValueError, match="not the start"):
        alert_text("forecast", b, NOW, D(1), forecast=D(2))
    with pytest.raises(ValueError):
        alert_text("threshold", b, START, D(1))
