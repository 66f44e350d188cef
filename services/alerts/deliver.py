"""Delivering fired alerts: to the ``budget-alerts`` topic and to every webhook of the budget.

Each (alert, target) pair is delivered until one attempt succeeds (a 2xx answer, or the broker's
acknowledgement) or ``INFERLEDGER_WEBHOOK_MAX_ATTEMPTS`` attempts failed. Attempt ``n + 1`` waits
``INFERLEDGER_WEBHOOK_BACKOFF_SECONDS * 3 ** (n - 1)`` after attempt ``n`` (1 s, 3 s, 9 s, ...:
ten attempts span 2.7 hours, so a receiver that is down for an hour still gets the alert).
Every attempt is a row of ``alert_deliveries``.

What is pending lives in Postgres, not in memory: a restarted or second alerts processor
carries on where another stopped. An attempt holds a transaction-scoped advisory lock on its
pair and records its outcome in the same transaction, so two processors never deliver the same
pair at once. A crash between a receiver's 2xx and that commit makes the next attempt deliver
the alert again: webhooks are at least once, and each carries ``alert_id`` (in the body and in
``X-Inferledger-Alert-Id``) for receivers that must see it once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.contracts import BudgetAlert, dumps
from services.contracts.webhook import headers
from services.runtime import logs
from services.runtime.config import ALERTS, Settings

log = logs.get(__name__)
BACKOFF_FACTOR = 3

PENDING_SQL = text(
    "SELECT a.alert_id, t.target, count(d.id) AS attempts, max(d.attempted_at) AS last "
    "FROM budget_alerts a JOIN budgets b USING (budget_id) "
    "CROSS JOIN LATERAL unnest(ARRAY[CAST(:kafka AS text)] || b.webhooks) AS t(target) "
    "LEFT JOIN alert_deliveries d ON d.alert_id = a.alert_id AND d.target = t.target "
    "GROUP BY a.alert_id, t.target "
    "HAVING NOT coalesce(bool_or(d.delivered), false) AND count(d.id) < :max_attempts "
    "ORDER BY min(a.fired_at), a.alert_id, t.target"
)
LOCK_SQL = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))")
STATE_SQL = text(
    "SELECT count(*), coalesce(bool_or(delivered), false), max(attempted_at) "
    "FROM alert_deliveries WHERE alert_id = :alert_id AND target = :target"
)
ALERT_SQL = text(
    "SELECT a.*, b.webhook_secret FROM budget_alerts a JOIN budgets b USING (budget_id) "
    "WHERE a.alert_id = :alert_id"
)
RECORD_SQL = text(
    "INSERT INTO alert_deliveries (alert_id, target, attempt, status_code, error, delivered) "
    "VALUES (:alert_id, :target, :attempt, :status_code, :error, :delivered)"
)


@dataclass
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


def delay(attempts: int, backoff_seconds: float) -> timedelta:
    """How long after attempt number ``attempts`` the next one may go."""
    return timedelta(seconds=backoff_seconds * BACKOFF_FACTOR ** max(attempts - 1, 0))


def alert_message(row: Any) -> BudgetAlert:
    """The contract's alert from its ``budget_alerts`` row (the same bytes on every attempt)."""
    model = None
    if row.kind == "anomaly":  # the subject: the model, or [tenant, model] (all-tenants budget)
        model = json.loads(row.subject)[1] if row.subject.startswith("[") else row.subject
    return BudgetAlert(
        alert_id=row.alert_id,
        budget_id=row.budget_id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        threshold=None if row.threshold is None else Decimal(row.threshold).normalize(),
        period_start=row.period_start,
        period_end=row.period_end,
        spend=row.spend,
        budget=row.budget,
        currency=row.currency,
        forecast_spend=row.forecast_spend,
        model=model,
        baseline=row.baseline,
        observed=row.observed,
        fired_at=row.fired_at,
        text=row.text,
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: following it would let a receiver send the
    alert (and its signature) somewhere the budget never named, an internal address included."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_webhook(
    url: str, body: bytes, secret: bytes | None, alert_id: str, timeout: float
) -> Outcome:
    """One signed POST; a 2xx answer is delivered, anything else (or no answer) is not."""
    hdrs = headers(secret, body) if secret else {"Content-Type": "application/json"}
    hdrs["X-Inferledger-Alert-Id"] = alert_id
    request = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return Outcome(False, exc.code, f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    return Outcome(200 <= status < 300, status, None if status < 300 else f"HTTP {status}")


class Deliverer:
    """Delivers what is pending, one (alert, target) pair at a time."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        publish: Callable[[str, bytes], None],
        post: Callable[[str, bytes, bytes | None, str, float], Outcome] = post_webhook,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.kafka_target = f"kafka:{settings.topic(ALERTS)}"
        self._publish = publish
        self._post = post
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else None
        self._warned = False

    def pending(self, now: datetime) -> tuple[list[tuple[str, str]], int]:
        """The pairs due now, and how many pairs wait at all (due later included)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                PENDING_SQL,
                {"kafka": self.kafka_target, "max_attempts": self.settings.webhook_max_attempts},
            ).all()
        backoff = self.settings.webhook_backoff_seconds
        due = [
            (r.alert_id, r.target)
            for r in rows
            if r.last is None or now >= r.last + delay(int(r.attempts), backoff)
        ]
        return due, len(rows)

    def deliver(self, now: datetime) -> tuple[int, int]:
        """Attempt every pair due now; returns (delivered now, pairs still waiting)."""
        due, _ = self.pending(now)
        delivered = sum(self._attempt(alert_id, target, now) for alert_id, target in due)
        return delivered, self.pending(now)[1]

    def _attempt(self, alert_id: str, target: str, now: datetime) -> bool:
        with self.engine.begin() as conn:
            if not conn.execute(LOCK_SQL, {"key": f"{alert_id}\x1f{target}"}).scalar_one():
                return False  # another processor is on it
            attempts, done, last = conn.execute(
                STATE_SQL, {"alert_id": alert_id, "target": target}
            ).one()
            backoff = self.settings.webhook_backoff_seconds
            if done or attempts >= self.settings.webhook_max_attempts:
                return False
            if last is not None and now < last + delay(int(attempts), backoff):
                return False
            row = conn.execute(ALERT_SQL, {"alert_id": alert_id}).one()
            body = dumps(alert_message(row))
            if target == self.kafka_target:
                outcome = self._to_kafka(alert_id, body)
            else:
                secret = row.webhook_secret.encode() if row.webhook_secret else self._secret
                if secret is None and not self._warned:
                    self._warned = True
                    log.warning("no webhook secret: alerts are posted unsigned; set "
                                "INFERLEDGER_WEBHOOK_SECRET or a budget's --secret")  # fmt: skip
                outcome = self._post(
                    target, body, secret, alert_id, self.settings.webhook_timeout_seconds
                )
            conn.execute(
                RECORD_SQL,
                {
                    "alert_id": alert_id,
                    "target": target,
                    "attempt": int(attempts) + 1,
                    "status_code": outcome.status_code,
                    "error": outcome.error,
                    "delivered": outcome.delivered,
                },
            )
        level = log.info if outcome.delivered else log.warning
        level(
            "alert delivery",
            alert_id=alert_id,
            target=_shown(target),
            attempt=attempts + 1,
            delivered=outcome.delivered,
            status=outcome.status_code,
            error=outcome.error,
        )
        return outcome.delivered

    def _to_kafka(self, alert_id: str, body: bytes) -> Outcome:
        try:
            self._publish(alert_id, body)
        except Exception as exc:  # the broker's refusal or absence: retried later
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
        return Outcome(True)


def _shown(target: str) -> str:
    """A webhook URL without its query string (it may carry a token) for the log."""
    return target.split("?", 1)[0]
