"""Budget alerts as pure rules: periods, budgets, alert ids, and when each kind of alert is due.

No I/O here: the alerts processor reads spend from the ledger, asks these functions what is due,
and records each alert under its deterministic ``alert_id`` (unique in ``budget_alerts``, so it
fires once whatever restarts, replays or concurrent processors happen). Money is ``Decimal``,
time is timezone-aware UTC; naive datetimes are rejected.

**Periods** (``period_bounds``): UTC, calendar-aligned, half-open ``[start, end)``: a ``day``
starts at midnight, a ``week`` on Monday 00:00 (ISO), a ``month`` on the 1st at 00:00.

**Threshold rule** (``thresholds_due``): a threshold ``t`` (a fraction of the budget) is due
when ``spend >= t * amount`` and ``t`` has not fired in the period. A credit that brings spend
back under ``t`` does not re-arm it: over a period, each ``t`` with ``t * amount <= max(spend)``
fires exactly once.

**Forecast rule** (``forecast_spend``, ``forecast_due``), with ``W = forecast_window`` (24 h):
``covered = min(covered, W)`` is how much of the trailing window ``(now - W, now]`` holds data
(the time since the first ledger data of the budget's scope), ``trailing`` the spend of the
budget's scope in that window (it may reach into the previous period). When
``covered < forecast_min_data`` (1 h) there is no forecast. Otherwise
``burn = trailing / covered`` and
``forecast = spend + burn * max(period_end - now, 0)``, computed with 60 significant digits and
rounded half-even to 12 decimal places. The forecast alert is due when
``spend < amount`` and ``forecast > amount``, once per period (alert subject ``""``).

**Anomaly rule** (``anomaly_due``), per tenant and model, over hourly points
``(hour_start, cost, completions)``: ``latest`` is the latest complete hour; the baseline is
every point with ``latest - anomaly_window <= hour_start < latest`` (7 days) and
``completions >= 1``, each giving ``x = cost / completions``. With ``n`` baseline points,
``mean = sum(x) / n`` and ``stddev = sqrt(sum((x - mean)^2) / n)`` (population). The anomaly is
due when ``n >= anomaly_min_points`` (24), ``latest.completions >= anomaly_min_completions``
(5), and ``observed = latest.cost / latest.completions`` satisfies
``observed > mean + anomaly_sigmas * stddev`` (3) and ``observed >= anomaly_min_rise * mean``
(1.1, so a perfectly flat baseline needs a real 10 % rise) and ``observed > 0``. Comparisons
use the exact 60-digit values; the finding reports them rounded to 12 decimal places.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Literal
from urllib.parse import urlsplit

Period = Literal["day", "week", "month"]
AlertKind = Literal["threshold", "forecast", "anomaly"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
ALERT_KINDS: tuple[AlertKind, ...] = ("threshold", "forecast", "anomaly")
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN)
"""Local decimal context of the rules: 60 significant digits, half-even."""
_Q12 = Decimal("1e-12")
_CENT = Decimal("0.01")
_ONE_US = timedelta(microseconds=1)


def _utc(at: datetime, what: str = "datetime") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {at.isoformat()})")
    return at.astimezone(UTC)


def _finite(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{what} must be a finite Decimal (got {value!r})")
    return value


def period_bounds(period: Period, at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar period ``[start, end)`` of kind ``period`` that contains ``at``."""
    day = _utc(at, "at").replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        if start.month == 12:
            return start, start.replace(year=start.year + 1, month=1)
        return start, start.replace(month=start.month + 1)
    raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {period!r})")


def threshold_str(threshold: Decimal | str) -> str:
    """The canonical text of a threshold fraction: ``0.80`` and ``0.8`` are both ``"0.8"``."""
    try:
        t = Decimal(threshold)
    except ArithmeticError:
        raise ValueError(f"threshold {threshold!r} is not a decimal number") from None
    if not t.is_finite() or t <= 0:
        raise ValueError(f"threshold must be a finite fraction > 0 (got {threshold!r})")
    return format(t.normalize(_CTX), "f")


def validate_webhook(url: str) -> str:
    """A webhook URL must be absolute ``http`` or ``https`` with a host; returns it unchanged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"webhook {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"webhook {url!r} must be an http(s) URL with a host")
    return url


@dataclass(frozen=True)
class Budget:
    """A budget over one tenant (or all, ``tenant_id=None``) for each ``day``/``week``/``month``."""

    budget_id: str
    tenant_id: str | None
    period: Period
    amount: Decimal
    currency: str = "USD"
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    include_idle_share: bool = False
    webhooks: tuple[str, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.budget_id, str) or not self.budget_id:
            raise ValueError("budget_id must be a non-empty string")
        if self.tenant_id is not None and (
            not isinstance(self.tenant_id, str) or not self.tenant_id
        ):
            raise ValueError("tenant_id must be a non-empty string, or None for all tenants")
        if self.period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {self.period!r})")
        if _finite(self.amount, "amount") <= 0:
            raise ValueError(f"amount must be > 0 (got {self.amount})")
        cur = self.currency
        if not (isinstance(cur, str) and len(cur) == 3 and cur.isalpha()):
            raise ValueError(f"currency must be a 3-letter ISO 4217 code (got {cur!r})")
        if not (cur.isascii() and cur.isupper()):
            raise ValueError(f"currency must be a 3-letter ISO 4217 code (got {cur!r})")
        if not isinstance(self.thresholds, tuple) or not self.thresholds:
            raise ValueError("thresholds must be a non-empty tuple of Decimal fractions")
        for t in self.thresholds:
            if _finite(t, "threshold") <= 0:
                raise ValueError(f"thresholds must be > 0 (got {t})")
        if any(a >= b for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise ValueError(f"thresholds must be strictly ascending (got {self.thresholds})")
        if not isinstance(self.include_idle_share, bool):
            raise ValueError("include_idle_share must be a bool")
        if not isinstance(self.webhooks, tuple):
            raise ValueError("webhooks must be a tuple of URLs")
        for url in self.webhooks:
            validate_webhook(url)
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ValueError("name must be a non-blank string or None")


@dataclass(frozen=True)
class AlertRules:
    """Every knob of the forecast and anomaly rules (see the module docstring)."""

    forecast_window: timedelta = timedelta(hours=24)
    forecast_min_data: timedelta = timedelta(hours=1)
    anomaly_window: timedelta = timedelta(days=7)
    anomaly_sigmas: Decimal = Decimal(3)
    anomaly_min_points: int = 24
    anomaly_min_completions: int = 5
    anomaly_min_rise: Decimal = Decimal("1.1")

    def __post_init__(self) -> None:
        if not timedelta(0) < self.forecast_min_data <= self.forecast_window:
            raise ValueError("need 0 < forecast_min_data <= forecast_window")
        if self.anomaly_window <= timedelta(0):
            raise ValueError("anomaly_window must be positive")
        if _finite(self.anomaly_sigmas, "anomaly_sigmas") < 0:
            raise ValueError("anomaly_sigmas must be >= 0")
        if _finite(self.anomaly_min_rise, "anomaly_min_rise") < 1:
            raise ValueError("anomaly_min_rise must be >= 1")
        if self.anomaly_min_points < 2 or self.anomaly_min_completions < 1:
            raise ValueError("need anomaly_min_points >= 2 and anomaly_min_completions >= 1")


DEFAULT_RULES = AlertRules()


def alert_id(
    budget_id: str, period_start: datetime, kind: AlertKind, subject: str | Decimal = ""
) -> str:
    """Deterministic id (32 hex) of the one alert of this budget, period, kind and subject.

    ``subject`` is the threshold for ``threshold`` (normalized: ``0.80`` == ``0.8``), ``""`` for
    ``forecast``, and the model for ``anomaly`` (``anomaly_subject`` for all-tenant budgets). The
    hash is of a JSON list, so no choice of field values can collide with another.
    """
    if kind == "threshold":
        subject = threshold_str(subject)
    elif kind == "forecast":
        if subject != "":
            raise ValueError("a forecast alert has no subject")
    elif kind == "anomaly":
        if not isinstance(subject, str) or not subject:
            raise ValueError("an anomaly alert needs its model as subject")
    else:
        raise ValueError(f"kind must be one of {', '.join(ALERT_KINDS)} (got {kind!r})")
    start = _utc(period_start, "period_start").isoformat()
    text = json.dumps(["inferledger.budget-alert.v1", budget_id, start, kind, subject])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def anomaly_subject(budget: Budget, tenant_id: str, model: str) -> str:
    """The anomaly subject: the model, with the tenant too when the budget covers all tenants."""
    return model if budget.tenant_id is not None else json.dumps([tenant_id, model])


def thresholds_due(budget: Budget, spend: Decimal, fired: frozenset[Decimal]) -> list[Decimal]:
    """Thresholds reached by ``spend`` (``spend >= t * amount``) and not yet fired, ascending."""
    _finite(spend, "spend")
    with localcontext(_CTX):
        return [t for t in budget.thresholds if t not in fired and spend >= t * budget.amount]


def forecast_spend(
    spend: Decimal,
    trailing_spend: Decimal,
    covered: timedelta,
    now: datetime,
    period_end: datetime,
    rules: AlertRules = DEFAULT_RULES,
) -> Decimal | None:
    """Spend projected to ``period_end`` at the trailing burn rate; None with too little data."""
    _finite(spend, "spend")
    _finite(trailing_spend, "trailing_spend")
    covered = min(covered, rules.forecast_window)
    if covered < rules.forecast_min_data:
        return None
    remaining = max(_utc(period_end, "period_end") - _utc(now, "now"), timedelta(0))
    with localcontext(_CTX):
        burned = trailing_spend * (remaining // _ONE_US) / (covered // _ONE_US)
        return (spend + burned).quantize(_Q12, rounding=ROUND_HALF_EVEN)


def forecast_due(
    budget: Budget,
    spend: Decimal,
    trailing_spend: Decimal,
    covered: timedelta,
    now: datetime,
    period_end: datetime,
    rules: AlertRules = DEFAULT_RULES,
    fired: bool = False,
) -> Decimal | None:
    """The forecast when the forecast alert must fire (``spend < amount < forecast``), else None."""
    forecast = forecast_spend(spend, trailing_spend, covered, now, period_end, rules)
    if fired or forecast is None or spend >= budget.amount or forecast <= budget.amount:
        return None
    return forecast


@dataclass(frozen=True)
class HourPoint:
    """One hour of one tenant and model: cost and completions of ``[hour_start, +1 h)``."""

    hour_start: datetime
    cost: Decimal
    completions: int


@dataclass(frozen=True)
class AnomalyFinding:
    """Why an anomaly fired: the baseline cost per completion, its stddev, and the observed one."""

    baseline: Decimal
    stddev: Decimal
    observed: Decimal
    points: int


def anomaly_due(
    points: Iterable[HourPoint], latest: HourPoint, rules: AlertRules = DEFAULT_RULES
) -> AnomalyFinding | None:
    """The finding when ``latest`` is an anomaly against ``points`` (module docstring), else None.

    Points outside the trailing window are ignored; two points of the same hour are an error.
    """
    end = _utc(latest.hour_start, "latest.hour_start")
    start = end - rules.anomaly_window
    seen: set[datetime] = set()
    xs: list[Decimal] = []
    with localcontext(_CTX):
        for p in points:
            at = _utc(p.hour_start, "hour_start")
            if not start <= at < end:
                continue
            if at in seen:
                raise ValueError(f"two points for hour {at.isoformat()}")
            seen.add(at)
            if p.completions >= 1:
                xs.append(_finite(p.cost, "cost") / p.completions)
        if len(xs) < rules.anomaly_min_points:
            return None
        if latest.completions < rules.anomaly_min_completions:
            return None
        observed = _finite(latest.cost, "cost") / latest.completions
        mean = sum(xs, Decimal(0)) / len(xs)
        stddev = (sum(((x - mean) ** 2 for x in xs), Decimal(0)) / len(xs)).sqrt()
        if not (
            observed > 0
            and observed > mean + rules.anomaly_sigmas * stddev
            and observed >= rules.anomaly_min_rise * mean
        ):
            return None
        q = [v.quantize(_Q12, rounding=ROUND_HALF_EVEN) for v in (mean, stddev, observed)]
    return AnomalyFinding(baseline=q[0], stddev=q[1], observed=q[2], points=len(xs))


def _money(value: Decimal) -> str:
    """Rounded to cents with thousands separators, for reading only: ``1,000.00``."""
    return f"{value.quantize(_CENT, rounding=ROUND_HALF_EVEN, context=_CTX):,.2f}"


def _unit(value: Decimal) -> str:
    """A per-completion cost to 4 significant digits (cents would hide it): ``0.01235``."""
    if abs(value) >= 100:
        return _money(value)
    return format(Context(prec=4, rounding=ROUND_HALF_EVEN).plus(value), "f")


def _plain(text: str) -> str:
    """Slack reads ``<...>`` as links and mentions: escape what a tenant may have named."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alert_text(
    kind: AlertKind,
    budget: Budget,
    period_start: datetime,
    spend: Decimal,
    *,
    threshold: Decimal | None = None,
    forecast: Decimal | None = None,
    finding: AnomalyFinding | None = None,
    model: str | None = None,
    tenant_id: str | None = None,
) -> str:
    """One human sentence for the ``text`` field (usable as a Slack incoming webhook).

    ``threshold`` for ``threshold``, ``forecast`` for ``forecast``, ``finding`` and ``model`` (and
    ``tenant_id`` for an all-tenants budget) for ``anomaly``.
    """
    start, end = period_bounds(budget.period, period_start)
    if start != _utc(period_start, "period_start"):
        raise ValueError(f"{period_start.isoformat()} is not the start of a {budget.period}")
    cur = budget.currency
    scope = _plain(budget.tenant_id) if budget.tenant_id is not None else "all tenants"
    head = (
        f"Budget '{_plain(budget.name or budget.budget_id)}' "
        f"({scope}, {budget.period} from {start.date().isoformat()}): "
    )
    of_budget = f"{_money(spend)} {cur} of {_money(budget.amount)} {cur}"
    if kind == "threshold" and threshold is not None:
        pct = format((threshold * 100).normalize(_CTX), "f")
        return (
            f"{head}spend {_money(spend)} {cur} reached {pct} % of {_money(budget.amount)} {cur}."
        )
    if kind == "forecast" and forecast is not None:
        return (
            f"{head}spend {_money(spend)} {cur} is forecast to reach {_money(forecast)} {cur} "
            f"by {end.date().isoformat()}, over the budget of {_money(budget.amount)} {cur}."
        )
    if kind == "anomaly" and finding is not None and model:
        who = f" for {_plain(tenant_id)}" if tenant_id and budget.tenant_id is None else ""
        return (
            f"{head}cost per completion of {_plain(model)}{who} rose to "
            f"{_unit(finding.observed)} {cur}, against a baseline of {_unit(finding.baseline)} "
            f"± {_unit(finding.stddev)} {cur} over {finding.points} hours (spend {of_budget})."
        )
    raise ValueError(f"alert_text: kind {kind!r} without its threshold, forecast or finding")
