"""The real FOCUS 1.0 sample ingests completely, with a correct summary, and nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.helpers import cli

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "focus-1.0-sample-1000.csv"


def test_the_focus_sample_ingests_completely(cli_env, settings, tmp_path):
    assert SAMPLE.is_file(), f"missing {SAMPLE}"
    summary = json.loads(cli(cli_env, "ingest", "billing", str(SAMPLE)).stdout)
    assert summary["rows"] == 1000 and summary["published"] == 1000 and summary["skipped"] == 0
    assert summary["by_charge_category"] == {"usage": 997, "adjustment": 2, "credit": 1}
    assert summary["by_provider"] == {"AWS": 942, "Microsoft": 51, "Oracle": 7}
    assert summary["without_resource_id"] == 75
    # EffectiveCost is 0 on most rows of this anonymized sample while BilledCost is not
    assert summary["chosen_cost_empty_or_zero_while_another_is_not"] > 500
    assert summary["examples"] and "EffectiveCost is empty or 0" in summary["examples"][0]

    billed = json.loads(
        cli(cli_env, "ingest", "billing", str(SAMPLE), "--cost-column", "BilledCost").stdout
    )
    assert billed["chosen_cost_empty_or_zero_while_another_is_not"] < 400
    assert billed["cost_total"] != summary["cost_total"]

    # gzip works too, and re-ingesting the same rows gives the same line ids
    import gzip

    gz = tmp_path / "focus.csv.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    assert json.loads(cli(cli_env, "ingest", "billing", str(gz)).stdout)["published"] == 1000

    cli(cli_env, "run", "all", "--until-idle")
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        lines = conn.execute(text("SELECT count(*), count(DISTINCT line_id) FROM billing_lines"))
        count, distinct = lines.one()
        reasons: dict[str, int] = dict(
            conn.execute(
                text("SELECT reason, count(*) FROM v_unallocated_billing GROUP BY reason")
            ).all()
        )
        credit = conn.execute(
            text("SELECT cost FROM billing_lines WHERE charge_category = 'credit'")
        ).scalar_one()
        entries = conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one()
    engine.dispose()
    # a line is its source row: re-ingesting (another cost column, a gzip copy) adds nothing;
    # the first ingestion's cost column holds
    assert distinct == count == 1000
    # no GPU resources in this sample: every line is kept, visible and unallocated
    assert sum(reasons.values()) == count
    assert reasons["no resource id"] >= 75
    assert reasons["not a known GPU resource"] > 0
    assert credit <= 0
    assert entries == 0
    assert "audit passed" in cli(cli_env, "audit").stdout
