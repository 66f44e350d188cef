"""Goodput and waste through the whole pipeline (issue 18, part 2): a seeded bucket of fast,
slow, failed and cancelled requests, with latency objectives from INFERLEDGER_SLOS, ingested and
run through the CLI, then read from v_goodput and v_waste as a user would. The figures are the
hand computation of tests/unit/test_goodput.py's seeded scenario: rate 36 USD/h, one minute,
busy 40 s (usage 0.40, idle 0.20); work 1,100 units split 504 within objective, 196 outside,
200 failed, 200 cancelled."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from tests.helpers import cli, query_rows

T0 = "2024-01-01T00:00:"


def event(eid: str, start: int, end: int, prompt: int, completion: int, status: str = "ok",
          first: int | None = None) -> dict[str, object]:  # fmt: skip
    e: dict[str, object] = {
        "event_id": eid, "tenant_id": "acme", "resource_id": "node-1", "model": "llama-70b",
        "engine": "vllm", "started_at": f"{T0}{start:02d}Z", "finished_at": f"{T0}{end:02d}Z",
        "prompt_tokens": prompt, "cached_prompt_tokens": 0, "completion_tokens": completion,
        "status": status,
    }  # fmt: skip
    if first is not None:
        e["first_token_at"] = f"{T0}{first:02d}Z"
    return e


EVENTS = [
    event("fast", 0, 10, 100, 101, first=1),  # ttft 1 s, 0.09 s per token: within
    event("slow", 10, 20, 100, 24, first=15),  # ttft 5 s > 2 s: outside
    event("failed", 20, 30, 200, 0, "error"),
    event("cancelled", 30, 40, 100, 25, "cancelled", first=31),
]
RATE = {
    "resource_id": "node-1", "price_per_hour": "36.00", "currency": "USD",
    "effective_from": "2024-01-01T00:00:00Z", "effective_to": "2024-01-01T00:01:00Z",
    "source": "list",
}  # fmt: skip


def test_waste_and_goodput_land_in_the_views_as_computed_by_hand(cli_env, settings, tmp_path):
    assert settings.database_url
    slos = {"llama-70b": {"ttft_seconds": 2, "tpot_seconds": 0.1}}
    env = {**cli_env, "INFERLEDGER_SLOS": json.dumps(slos)}
    events, rates = Path(tmp_path, "events.jsonl"), Path(tmp_path, "rates.jsonl")
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    rates.write_text(json.dumps(RATE) + "\n")
    cli(env, "ingest", "rates", str(rates))
    assert json.loads(cli(env, "ingest", "events", str(events)).stdout)["published"] == 4
    cli(env, "run", "all", "--until-idle")

    goodput = query_rows(
        settings.database_url,
        "SELECT tenant_id, model, completions, completions_within_slo, completions_outside_slo,"
        " amount, cost_per_completion_within_slo FROM v_goodput",
    )
    assert [tuple(r) for r in goodput] == [
        ("acme", "llama-70b", 2, 1, 1, Decimal("0.4"), Decimal("0.4"))
    ]
    waste = query_rows(
        settings.database_url,
        "SELECT tenant_id, resource_id, amount, failed_cost, cancelled_cost, slo_miss_cost,"
        " waste_cost, waste_share FROM v_waste",
    )
    assert [tuple(r) for r in waste] == [
        ("acme", "node-1", Decimal("0.4"), Decimal("0.072727272727"),
         Decimal("0.072727272727"), Decimal("0.071272727273"), Decimal("0.216727272727"),
         Decimal("0.541818")),
    ]  # fmt: skip
    # within objective: what is left, 504/1100 of 0.4 to the last 1e-12
    (within,) = query_rows(
        settings.database_url,
        "SELECT sum(amount - slo_miss_amount - failed_amount - cancelled_amount),"
        " sum(completions_within_slo), sum(cancelled_requests), sum(failed_requests)"
        " FROM ledger_entries WHERE tenant_id IS NOT NULL",
    )
    assert tuple(within) == (Decimal("0.183272727273"), 1, 1, 2)
    cli(env, "audit", "--skip-topics")
