"""`inferledger budget set|list|delete|test-webhook` against the test database, and
v_budget_status / v_tenant_idle_share on a small hand-made ledger (exact numbers)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from services.contracts import BudgetAlert, webhook


def budget_cli(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "INFERLEDGER_WEBHOOK_SECRET"}
    environ.update(INFERLEDGER_DATABASE_URL=db_url, **env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "budget", *args],
        env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def listed(db_url: str) -> list[dict[str, Any]]:
    out = budget_cli(db_url, "list", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def test_set_list_and_delete(db_url):
    made = budget_cli(
        db_url, "set", "--tenant", "acme", "--period", "month", "--amount", "100.50",
        "--thresholds", "50, 80,100,120", "--webhook", "https://hooks.example.com/T0/SECRET",
        "--secret", "s3cret", "--include-idle-share",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    acme = made.stdout.strip()
    assert len(acme) == 32 and int(acme, 16) >= 0  # only the id on stdout
    everyone = budget_cli(db_url, "set", "--all-tenants", "--period", "day", "--amount", "7")
    assert everyone.returncode == 0, everyone.stderr
    assert "no --secret" not in everyone.stderr  # no webhook: nothing to sign
    every_id = everyone.stdout.strip()

    rows = {r["budget_id"]: r for r in listed(db_url)}
    assert set(rows) == {acme, every_id}
    a = rows[acme]
    assert (a["name"], a["tenant_id"], a["period"], a["currency"]) == (
        "acme monthly", "acme", "month", "USD",
    )  # fmt: skip
    assert (a["budget"], a["spend"], a["spent"]) == ("100.500000000000", "0", "0.000000")
    assert a["thresholds"] == "50% 80% 100% 120%" and a["idle_share"] is True
    assert a["webhooks"] == "hooks.example.com"  # the URL's path (a token) is not shown
    assert a["alerts_fired"] == 0 and a["forecast_spend"] is None
    assert rows[every_id]["tenant_id"] is None and rows[every_id]["name"] == "all tenants daily"

    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT thresholds, webhooks, webhook_secret FROM budgets WHERE budget_id = :i"),
            {"i": acme},
        ).one()
    engine.dispose()
    assert stored.thresholds == [Decimal("0.5"), Decimal("0.8"), Decimal("1"), Decimal("1.2")]
    assert stored.webhooks == ["https://hooks.example.com/T0/SECRET"]
    assert stored.webhook_secret == "s3cret"
    table = budget_cli(db_url, "list")
    assert table.returncode == 0 and "acme monthly" in table.stdout and "SECRET" not in table.stdout
    assert "s3cret" not in table.stdout

    gone = budget_cli(db_url, "delete", acme)
    assert gone.returncode == 0 and f"deleted budget {acme}" in gone.stdout
    assert [r["budget_id"] for r in listed(db_url)] == [every_id]
    again = budget_cli(db_url, "delete", acme)
    assert again.returncode == 1 and "was deleted already" in again.stderr
    unknown = budget_cli(db_url, "delete", "nope")
    assert unknown.returncode == 1 and "no budget 'nope'" in unknown.stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:  # soft: the row (and any alert of it) stays
        assert conn.execute(text("SELECT count(*) FROM budgets")).scalar_one() == 2
    engine.dispose()


def test_a_webhook_without_any_secret_is_accepted_with_a_note(db_url):
    out = budget_cli(
        db_url, "set", "--tenant", "acme", "--period", "week", "--amount", "1",
        "--webhook", "http://10.0.0.5:9000/hook",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cannot be signed" in out.stderr
    quiet = budget_cli(
        db_url, "set", "--tenant", "acme", "--period", "week", "--amount", "1",
        "--webhook", "http://10.0.0.5:9000/hook", INFERLEDGER_WEBHOOK_SECRET="k",
    )  # fmt: skip
    assert quiet.returncode == 0 and "cannot be signed" not in quiet.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "day", "--amount", "1"], "exactly one of --tenant T and --all-tenants"),
        (["--tenant", "a", "--all-tenants", "--period", "day", "--amount", "1"], "exactly one"),
        (["--tenant", "a", "--period", "day", "--amount", "0"], "greater than 0"),
        (["--tenant", "a", "--period", "day", "--amount", "-5"], "greater than 0"),
        (["--tenant", "a", "--period", "day", "--amount", "ten"], "must be a decimal number"),
        (["--tenant", "a", "--period", "day", "--amount", "NaN"], "greater than 0"),
        (["--tenant", "a", "--period", "day", "--amount", "1e30"], "less than 10^26"),
        (["--tenant", "a", "--period", "day", "--amount", "0.0000000000001"], "12 decimal"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--thresholds", "50,0"],
         "greater than 0"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--thresholds", "half"],
         "percentages separated by commas"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--currency", "dollars"],
         "ISO 4217"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--webhook", "ftp://x.example"],
         "http:// or https:// URL with a host"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--webhook", "file:///etc/passwd"],
         "http:// or https:// URL with a host"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--webhook", "http://"],
         "http:// or https:// URL with a host"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--webhook", "hooks.example.com"],
         "http:// or https:// URL with a host"),
        (["--tenant", "a", "--period", "day", "--amount", "1", "--webhook", "http://h:99999/"],
         "is not a valid URL"),
        (["--tenant", "", "--period", "day", "--amount", "1"], "--tenant must be 1 to 128"),
        (["--tenant", "a\tb", "--period", "day", "--amount", "1"], "control characters"),
    ],
)  # fmt: skip
def test_invalid_budgets_are_one_line_errors(db_url, args, message):
    out = budget_cli(db_url, "set", *args)
    assert out.returncode == 1, out
    assert message in out.stderr
    assert out.stderr.startswith("Error: ") and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""


def test_an_unmigrated_database_is_a_one_line_error(empty_db_url):
    for args in (["list"], ["set", "--tenant", "a", "--period", "day", "--amount", "1"]):
        out = budget_cli(empty_db_url, *args)
        assert out.returncode == 1 and "no ledger yet" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- v_budget_status, exactly

ENTRY = """INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model,
           resource_id, bucket_start, bucket_seconds, amount, currency)
           VALUES (:id, :kind, 'provisional', :tenant, :model, :resource, :at, 60, :amount,
                   :currency)"""


def add_entries(engine: Any, rows: list[tuple[str, str | None, str, datetime, str, str]]) -> None:
    """(kind, tenant, resource, bucket_start, amount, currency) rows, in one transaction."""
    with engine.begin() as conn:
        for kind, tenant, resource, at, amount, currency in rows:
            conn.execute(
                text(ENTRY),
                {"id": uuid.uuid4().hex, "kind": kind, "tenant": tenant,
                 "model": None if tenant is None else "llama-70b", "resource": resource,
                 "at": at, "amount": Decimal(amount), "currency": currency},
            )  # fmt: skip


def status(engine: Any) -> tuple[Any, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT now() AS now, * FROM v_budget_status")).mappings().all()
    return (rows[0]["now"] if rows else None), {r["name"]: r for r in rows}


def set_budget(db_url: str, name: str, *args: str) -> str:
    out = budget_cli(db_url, "set", "--name", name, "--amount", "1", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_budget_status_spend_with_and_without_the_idle_share(db_url):
    engine = create_engine(db_url)
    with engine.connect() as conn:
        day = conn.execute(
            text("SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
        ).scalar_one()
    b1, b2, before = (
        day + timedelta(minutes=1),
        day + timedelta(minutes=2),
        day - timedelta(minutes=1),
    )
    add_entries(engine, [
        # node-1 today: acme busy 0.12 + 0.03 - 0.05 = 0.10, beta 0.20, idle 0.28 + 0.40 = 0.68
        ("usage", "acme", "node-1", b1, "0.12", "USD"),
        ("usage", "beta", "node-1", b1, "0.20", "USD"),
        ("idle", None, "node-1", b1, "0.28", "USD"),
        ("usage", "acme", "node-1", b2, "0.03", "USD"),
        ("idle", None, "node-1", b2, "0.40", "USD"),
        ("reconciliation", "acme", "node-1", b1, "-0.05", "USD"),
        # node-2 today: idle only, nobody to share it with (stays unshared)
        ("idle", None, "node-2", b1, "1.00", "USD"),
        # node-3 today: acme in another currency
        ("usage", "acme", "node-3", b1, "5", "EUR"),
        # yesterday: not in today's period
        ("usage", "acme", "node-1", before, "7", "USD"),
        ("idle", None, "node-1", before, "1", "USD"),
    ])  # fmt: skip
    for name, args in {
        "acme": ["--tenant", "acme"],
        "acme+idle": ["--tenant", "acme", "--include-idle-share"],
        "beta+idle": ["--tenant", "beta", "--include-idle-share"],
        "all": ["--all-tenants"],
        "all+idle": ["--all-tenants", "--include-idle-share"],
        "acme-eur": ["--tenant", "acme", "--currency", "EUR"],
        "nobody+idle": ["--tenant", "nobody", "--include-idle-share"],
    }.items():
        set_budget(db_url, name, "--period", "day", *args)

    # idle shares in proportion to busy cost, cumulative rounding: acme first (tenant order)
    acme_idle = Decimal("0.226666666667")  # round(0.68 * 0.10 / 0.30, 12)
    beta_idle = Decimal("0.453333333333")  # 0.68 - acme's, exactly
    _, got = status(engine)
    want = {
        "acme": Decimal("0.10"),
        "acme+idle": Decimal("0.10") + acme_idle,
        "beta+idle": Decimal("0.20") + beta_idle,
        "all": Decimal("0.30"),
        "all+idle": Decimal("0.30") + Decimal("0.68") + Decimal("1.00"),
        "acme-eur": Decimal("5"),
        "nobody+idle": Decimal("0"),
    }
    assert {n: r["spend"] for n, r in got.items()} == want
    for name, spend in want.items():
        row = got[name]
        assert row["spent_fraction"] == spend.quantize(Decimal("0.000001")), name
        assert row["period_start"] == day and row["period_end"] == day + timedelta(days=1)
        assert row["budget"] == 1 and row["alerts_fired"] == 0
    with engine.connect() as conn:
        shares = conn.execute(
            text("""SELECT day, resource_id, tenant_id, currency, idle_share
                    FROM v_tenant_idle_share ORDER BY 1, 2, 3""")
        ).all()
    assert [(s.resource_id, s.tenant_id, s.idle_share) for s in shares] == [
        ("node-1", "acme", Decimal("1.000000000000")),  # yesterday: acme alone
        ("node-1", "acme", acme_idle),
        ("node-1", "beta", beta_idle),
    ]
    assert acme_idle + beta_idle == Decimal("0.68")

    # an alert of this period counts; one of another period does not
    with engine.begin() as conn:
        acme_id = conn.execute(text("SELECT budget_id FROM budgets WHERE name = 'acme'")).scalar()
        for i, start in enumerate((day, day - timedelta(days=1))):
            conn.execute(
                text("""INSERT INTO budget_alerts (alert_id, budget_id, tenant_id, kind, subject,
                        period_start, period_end, threshold, spend, budget, currency, text)
                        VALUES (:id, :b, 'acme', 'threshold', '0.5', :s, :e, 0.5, 1, 1, 'USD',
                                'x')"""),
                {"id": f"a{i}", "b": acme_id, "s": start, "e": start + timedelta(days=1)},
            )
    assert status(engine)[1]["acme"]["alerts_fired"] == 1
    engine.dispose()


def test_the_forecast_follows_the_trailing_24_hour_rule(db_url):
    engine = create_engine(db_url)
    with engine.connect() as conn:
        now = conn.execute(text("SELECT date_trunc('minute', now())")).scalar_one()
    add_entries(engine, [
        # gamma: history older than 24 h, so covered = 24 h; 2.00 in the trailing 24 h
        ("usage", "gamma", "node-1", now - timedelta(hours=30), "4.00", "USD"),
        ("usage", "gamma", "node-1", now - timedelta(hours=3), "1.50", "USD"),
        ("usage", "gamma", "node-1", now - timedelta(minutes=30), "0.50", "USD"),
        # delta: 3 hours of history
        ("usage", "delta", "node-1", now - timedelta(hours=3), "0.30", "USD"),
        # epsilon: 30 minutes of history, too little to forecast
        ("usage", "epsilon", "node-1", now - timedelta(minutes=30), "0.30", "USD"),
    ])  # fmt: skip
    for tenant in ("gamma", "delta", "epsilon"):
        set_budget(db_url, tenant, "--tenant", tenant, "--period", "month")
    at, got = status(engine)

    def expected(tenant: str, entries: list[tuple[timedelta, str]], first: timedelta) -> Decimal:
        row = got[tenant]
        spend = sum(
            (Decimal(a) for ago, a in entries if now - ago >= row["period_start"]), Decimal(0)
        )
        assert row["spend"] == spend
        trailing = sum(
            (Decimal(a) for ago, a in entries if now - ago >= at - timedelta(hours=24)),
            Decimal(0),
        )
        covered = min(timedelta(hours=24), at - (now - first)).total_seconds()
        left = (row["period_end"] - at).total_seconds()
        return spend + trailing / Decimal(str(covered)) * Decimal(str(left))

    gamma = [(timedelta(hours=30), "4.00"), (timedelta(hours=3), "1.50"),
             (timedelta(minutes=30), "0.50")]  # fmt: skip
    want = expected("gamma", gamma, timedelta(hours=30))
    assert abs(got["gamma"]["forecast_spend"] - want) < Decimal("1e-9"), (got["gamma"], want)
    want = expected("delta", [(timedelta(hours=3), "0.30")], timedelta(hours=3))
    assert abs(got["delta"]["forecast_spend"] - want) < Decimal("1e-9"), (got["delta"], want)
    assert got["epsilon"]["forecast_spend"] is None  # covered < 1 h
    engine.dispose()


# ---------------------------------------------------------------- test-webhook


class Receiver(http.server.BaseHTTPRequestHandler):
    secret = b""
    status = 200
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = webhook.verify(
            self.secret, self.headers[webhook.TIMESTAMP_HEADER], body,
            self.headers[webhook.SIGNATURE_HEADER],
        )  # fmt: skip
        self.seen.append({"ok": ok, "body": body, "content_type": self.headers["Content-Type"]})
        self.send_response(self.status if ok else 401)
        self.end_headers()
        self.wfile.write(b"fine" if ok else b"bad signature")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    handler = type("R", (Receiver,), {"secret": b"s3cret", "status": 200, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def test_test_webhook_sends_a_signed_sample_alert(receiver):
    url, handler = receiver
    out = budget_cli("", "test-webhook", url, "--secret", "s3cret")
    assert out.returncode == 0, out.stderr
    assert f"{url}: HTTP 200 fine" in out.stdout
    [seen] = handler.seen
    assert seen["ok"] and seen["content_type"] == "application/json"
    alert = BudgetAlert.model_validate_json(seen["body"])
    assert alert.kind == "threshold" and alert.threshold == Decimal("0.8")
    assert "80 %" in alert.text and json.loads(seen["body"])["text"] == alert.text

    # the global secret works the same; a wrong one is refused by the receiver: exit 1
    env = {"INFERLEDGER_WEBHOOK_SECRET": "s3cret"}
    assert budget_cli("", "test-webhook", url, **env).returncode == 0
    wrong = budget_cli("", "test-webhook", url, "--secret", "other")
    assert wrong.returncode == 1 and "HTTP 401 bad signature" in wrong.stdout
    assert [s["ok"] for s in handler.seen] == [True, True, False]


def test_test_webhook_failures_exit_1_with_one_line(receiver):
    url, handler = receiver
    handler.status = 503
    down = budget_cli("", "test-webhook", url, "--secret", "s3cret")
    assert down.returncode == 1 and "HTTP 503" in down.stdout
    nobody = budget_cli("", "test-webhook", "http://127.0.0.1:9/x", "--secret", "k")
    assert nobody.returncode == 1 and nobody.stderr.startswith("Error: http://127.0.0.1:9/x: ")
    assert nobody.stderr.count("\n") == 1, nobody.stderr
    unsigned = budget_cli("", "test-webhook", url)
    assert unsigned.returncode == 1 and "no signing key" in unsigned.stderr
    bad = budget_cli("", "test-webhook", "gopher://x", "--secret", "k")
    assert bad.returncode == 1 and "http:// or https:// URL" in bad.stderr
