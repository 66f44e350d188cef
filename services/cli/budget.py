"""``inferledger budget set|list|delete|test-webhook``: budgets and their webhooks.

A budget covers one tenant (or all tenants) over a UTC calendar period (day, week, month); the
alerts processor (``run alerts``) fires threshold, forecast and anomaly alerts against it.
``set``, ``list`` and ``delete`` need the database; ``test-webhook`` sends a signed sample alert
and needs nothing else. docs/budgets.md has the definitions.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import click

from services.cli.common import ledger_required, settings_of
from services.runtime.stack import local_stack

PERIODS = ("day", "week", "month")
ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}
AMOUNT_LIMIT = Decimal(10) ** 26  # NUMERIC(38,12)
# what the database's check (inferledger_http_urls, migration 0006) accepts, and a host
_URL = re.compile(r"https?://[^/?#@:\s][^/?#\s]*([/?#]\S*)?", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_amount(text: str) -> Decimal:
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise click.ClickException(f"--amount must be a decimal number, not {text!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise click.ClickException(f"--amount must be greater than 0, not {text!r}")
    if amount >= AMOUNT_LIMIT:
        raise click.ClickException(f"--amount must be less than 10^26, not {text!r}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -12:
        raise click.ClickException(f"--amount has more than 12 decimal places: {text!r}")
    return amount


def parse_thresholds(text: str) -> list[Decimal]:
    """``50,80,100`` (percentages of the amount) as sorted fractions ``[0.5, 0.8, 1]``."""
    out: set[Decimal] = set()
    for part in text.split(","):
        part = part.strip().removesuffix("%").strip()
        try:
            percent = Decimal(part)
        except InvalidOperation:
            raise click.ClickException(
                f"--thresholds must be percentages separated by commas (50,80,100), not {text!r}"
            ) from None
        if not percent.is_finite() or percent <= 0 or percent > 10_000:
            raise click.ClickException(
                f"--thresholds: each percentage must be greater than 0 (and at most 10000), "
                f"not {part!r}"
            )
        fraction = percent / 100
        if fraction != fraction.quantize(Decimal("1e-12")):
            raise click.ClickException(f"--thresholds: {part!r} has too many decimal places")
        out.add(
            fraction.normalize() if fraction != fraction.to_integral() else fraction.quantize(1)
        )
    return sorted(out)


def check_webhook(url: str) -> str:
    """An http(s) URL with a host, or a one-line error."""
    url = url.strip()
    problem = None
    if not _URL.fullmatch(url) or _CONTROL.search(url):
        problem = "must be an http:// or https:// URL with a host"
    else:
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port out of range or not a number raises here
            if not parts.hostname:
                problem = "has no host"
        except ValueError as exc:
            problem = f"is not a valid URL ({exc})"
    if problem:
        raise click.ClickException(f"webhook {url!r} {problem}")
    return url


def check_name(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or _CONTROL.search(value):
        raise click.ClickException(
            f"{what} must be 1 to {limit} characters without control characters, not {value!r}"
        )
    return value


@click.group()
def budget() -> None:
    """Budgets: spend limits per tenant (or all tenants) and UTC period, and their alerts."""


@budget.command("set")
@click.option("--tenant", default=None, help="the tenant whose spend counts")
@click.option("--all-tenants", is_flag=True, help="count the spend of every tenant")
@click.option("--period", type=click.Choice(PERIODS), required=True, help="UTC calendar period")
@click.option("--amount", required=True, help="the budget per period, a decimal (100.00)")
@click.option("--currency", default="USD", show_default=True, help="ISO 4217 code")
@click.option(
    "--thresholds",
    default="50,80,100",
    show_default=True,
    help="percentages of the amount that fire an alert once per period",
)
@click.option(
    "--include-idle-share",
    is_flag=True,
    help="count the tenant's share of idle GPU cost (all tenants: all idle cost)",
)
@click.option("--webhook", "webhooks", multiple=True, help="http(s) URL to POST alerts to")
@click.option("--name", default=None, help="a name to show (default: tenant and period)")
@click.option(
    "--secret", default=None, help="this budget's webhook signing key (else the global one)"
)
@click.pass_context
def set_budget(
    ctx: click.Context,
    tenant: str | None,
    all_tenants: bool,
    period: str,
    amount: str,
    currency: str,
    thresholds: str,
    include_idle_share: bool,
    webhooks: tuple[str, ...],
    name: str | None,
    secret: str | None,
) -> None:
    """Create a budget; prints its id. The spend of the current period so far counts at once
    (see `budget list`)."""
    from services.ledger.budgets import create_budget
    from services.ledger.db import make_engine

    if (tenant is None) == (not all_tenants):
        raise click.ClickException("give exactly one of --tenant T and --all-tenants")
    if tenant is not None:
        tenant = check_name(tenant, "--tenant", 128)
    value = parse_amount(amount)
    currency = currency.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise click.ClickException(f"--currency must be an ISO 4217 code (USD), not {currency!r}")
    fractions = parse_thresholds(thresholds)
    urls = [check_webhook(u) for u in webhooks]
    label = check_name(
        name if name is not None else f"{tenant or 'all tenants'} {ADJECTIVE[period]}",
        "--name",
        256,
    )
    if secret is not None and not secret.strip():
        raise click.ClickException("--secret must not be empty")
    settings = settings_of(ctx)
    if urls and secret is None and settings.webhook_secret is None:
        click.echo(
            "note: no --secret and no INFERLEDGER_WEBHOOK_SECRET: webhook deliveries cannot be "
            "signed until one is set",
            err=True,
        )
    with local_stack(settings, need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            budget_id = create_budget(
                engine,
                name=label,
                tenant_id=tenant,
                period=period,
                amount=value,
                currency=currency,
                thresholds=fractions,
                include_idle_share=include_idle_share,
                webhooks=urls,
                secret=secret,
            )
        finally:
            engine.dispose()
    click.echo(budget_id)


def _hosts(urls: list[str]) -> str:
    # webhook URLs often carry a token in their path (Slack's do): list shows hosts only
    return ", ".join(urlsplit(u).hostname or "?" for u in urls)


def _percent(fraction: Decimal | None) -> str | None:
    return None if fraction is None else f"{fraction * 100:.1f} %"


@budget.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def list_budgets(ctx: click.Context, fmt: str) -> None:
    """Budgets (not deleted) with the spend of their current period (v_budget_status)."""
    from sqlalchemy import text

    from services.ledger.db import make_engine
    from services.ledger.report import render

    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    text(
                        """SELECT v.*, b.thresholds, b.webhooks
                           FROM v_budget_status v JOIN budgets b USING (budget_id)
                           ORDER BY v.tenant_id NULLS FIRST, v.name, b.created_at"""
                    )
                ).mappings()
                rows: list[dict[str, Any]] = []
                for r in found:
                    thresholds = " ".join(
                        f"{format((t * 100).normalize(), 'f')}%" for t in r["thresholds"]
                    )
                    rows.append(
                        {
                            "budget_id": r["budget_id"],
                            "name": r["name"],
                            "tenant_id": r["tenant_id"] if fmt == "json" else r["tenant_id"] or "*",
                            "period": r["period"],
                            "period_start": r["period_start"].date().isoformat(),
                            "budget": r["budget"],
                            "currency": r["currency"],
                            "spend": r["spend"],
                            "spent": r["spent_fraction"]
                            if fmt == "json"
                            else _percent(r["spent_fraction"]),
                            "forecast_spend": r["forecast_spend"],
                            "thresholds": thresholds,
                            "idle_share": r["include_idle_share"],
                            "alerts_fired": r["alerts_fired"],
                            "webhooks": _hosts(list(r["webhooks"])),
                        }
                    )
        finally:
            engine.dispose()
    click.echo(render(rows, fmt, "budgets (current period, UTC)"), nl=fmt != "table")


@budget.command("delete")
@click.argument("budget_id")
@click.pass_context
def delete_budget(ctx: click.Context, budget_id: str) -> None:
    """Delete a budget: it fires no more alerts; its alerts and their deliveries are kept."""
    from sqlalchemy import text

    from services.ledger.db import make_engine

    with local_stack(settings_of(ctx), need_broker=False) as s, ledger_required():
        assert s.database_url
        engine = make_engine(s.database_url)
        try:
            with engine.begin() as conn:
                state = conn.execute(
                    text("SELECT deleted_at FROM budgets WHERE budget_id = :id FOR UPDATE"),
                    {"id": budget_id},
                ).first()
                if state is None:
                    raise click.ClickException(f"no budget {budget_id!r}")
                if state.deleted_at is not None:
                    when = state.deleted_at.astimezone(UTC)
                    raise click.ClickException(
                        f"budget {budget_id} was deleted already ({when:%Y-%m-%d %H:%M} UTC)"
                    )
                conn.execute(
                    text("UPDATE budgets SET deleted_at = now() WHERE budget_id = :id"),
                    {"id": budget_id},
                )
        finally:
            engine.dispose()
    click.echo(f"deleted budget {budget_id}")


def sample_alert(now: datetime) -> Any:
    """A threshold alert for a made-up tenant, as the alerts processor would send it."""
    from services.accounting.budgets import period_bounds
    from services.contracts import BudgetAlert

    start, end = period_bounds("month", now)
    return BudgetAlert(
        alert_id=f"test-{uuid.uuid4().hex}",
        budget_id="test-webhook",
        tenant_id="example-tenant",
        kind="threshold",
        threshold=Decimal("0.8"),
        period_start=start,
        period_end=end,
        spend=Decimal("80.00"),
        budget=Decimal("100.00"),
        currency="USD",
        fired_at=now,
        text=(
            "[inferledger test] example-tenant has spent 80.00 USD, 80 % of its monthly budget "
            "of 100.00 USD"
        ),
    )


@budget.command("test-webhook")
@click.argument("url")
@click.option("--secret", default=None, help="signing key (default: INFERLEDGER_WEBHOOK_SECRET)")
@click.pass_context
def test_webhook(ctx: click.Context, url: str, secret: str | None) -> None:
    """POST a signed sample alert to URL and print the answer; exits 1 unless it is 2xx."""
    import asyncio

    from services.contracts import webhook

    settings = settings_of(ctx)
    url = check_webhook(url)
    if secret is None and settings.webhook_secret is not None:
        secret = settings.webhook_secret.get_secret_value()
    if not secret:
        raise click.ClickException(
            "no signing key: pass --secret or set INFERLEDGER_WEBHOOK_SECRET"
        )
    body = sample_alert(datetime.now(UTC)).model_dump_json().encode()
    headers = webhook.headers(secret.encode(), body)
    status, answer = asyncio.run(_post(url, body, headers, settings.webhook_timeout_seconds))
    click.echo(f"{url}: HTTP {status}{' ' + answer if answer else ''}")
    if not 200 <= status < 300:
        raise SystemExit(1)


async def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            text = (await response.text(errors="replace"))[:200]
            return response.status, " ".join(text.split())
    except TimeoutError:
        raise click.ClickException(f"{url}: no answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"{url}: {exc or type(exc).__name__}") from None
