"""`inferledger demo` as a user runs it (on the test's services, a slice of the trace)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import create_engine, text

from services.demo.fleet import DEFAULT_FLEET, Fleet, rental_window, replay
from tests.helpers import cli


def test_demo_prints_the_table_and_writes_the_html_report(cli_env, settings, tmp_path):
    html = tmp_path / "demo.html"
    out = cli(cli_env, "demo", "--limit", "1500", "--html", str(html)).stdout
    assert "cost per completion, per tenant and model" in out
    for tenant in ("acme", "globex", "initech", "umbrella", "hooli"):
        assert tenant in out
    assert "i-0h100spare" in out and "busy_fraction" in out
    assert "HTML report" in out
    page = html.read_text()
    assert "<svg" in page and "Idle cost per node" in page

    events = replay(Fleet.from_dict(DEFAULT_FLEET), limit=1500)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        completions = conn.execute(
            text("SELECT sum(completions) FROM v_cost_per_completion")
        ).scalar_one()
        spare = conn.execute(
            text(
                "SELECT sum(amount), bool_and(entry_kind = 'idle') FROM ledger_entries "
                "WHERE resource_id = 'i-0h100spare'"
            )
        ).one()
    engine.dispose()
    assert completions == sum(e.status == "ok" for e in events)
    assert "audit passed" in cli(cli_env, "audit").stdout
    # the spare node was paid for and never used: its whole rental is idle cost
    start, end = rental_window(events)
    hours = Decimal((end - start).total_seconds()) / 3600
    assert spare[1] is True and spare[0] == (Decimal("98.32") * hours).quantize(Decimal("1e-12"))
