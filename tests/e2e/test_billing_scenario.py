"""Provisional run, then a bill at another price, then a late event, then a restated bill.

After each step the ledger per (tenant, model) must equal what DESIGN.md's formulas give,
computed here independently with exact fractions, and `inferledger audit` must pass.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction

from sqlalchemy import create_engine, text

from tests.helpers import cli

T0 = datetime(2024, 1, 1, tzinfo=UTC)
Q = Fraction(1, 10**12)


def ev(eid, tenant, model, start, end, prompt, cached, completion, status="ok"):
    return {
        "event_id": eid,
        "tenant_id": tenant,
        "resource_id": "node-1",
        "model": model,
        "engine": "vllm",
        "started_at": (T0 + timedelta(seconds=start)).isoformat(),
        "finished_at": (T0 + timedelta(seconds=end)).isoformat(),
        "prompt_tokens": prompt,
        "cached_prompt_tokens": cached,
        "completion_tokens": completion,
        "status": status,
    }


EVENTS = [
    ev("r1", "acme", "llama-70b", 0, 20, 1000, 0, 200),
    ev("r2", "beta", "llama-70b", 10, 30, 500, 400, 100),
    ev("r3", "acme", "llama-8b", 50, 70, 300, 0, 50),
]
LATE = ev("r4", "beta", "llama-8b", 20, 45, 800, 200, 300)
RATE = {
    "resource_id": "node-1",
    "price_per_hour": "36.00",
    "currency": "USD",
    "effective_from": T0.isoformat(),
    "effective_to": (T0 + timedelta(hours=1)).isoformat(),
}


def bill(line_id, cost, category="usage"):
    return {
        "line_id": line_id,
        "resource_id": "node-1",
        "period_start": T0.isoformat(),
        "period_end": (T0 + timedelta(hours=1)).isoformat(),
        "cost": cost,
        "currency": "USD",
        "charge_category": category,
        "source": "focus",
    }


def reference(events, hour_cost: Fraction) -> dict:
    """DESIGN.md section 3 with exact fractions: 60 buckets of 60 s, cost hour_cost / 60."""
    c_b = hour_cost / 60
    out: dict = {}
    for b in range(60):
        b0, b1 = b * 60, b * 60 + 60
        spans: list[tuple[float, float]] = []
        work: dict[tuple[str, str], Fraction] = {}
        for e in events:
            s = (datetime.fromisoformat(e["started_at"]) - T0).total_seconds()
            f = (datetime.fromisoformat(e["finished_at"]) - T0).total_seconds()
            lo, hi = max(s, b0), min(f, b1)
            if hi > lo:
                spans.append((lo, hi))
                u = (
                    Fraction(e["prompt_tokens"] - e["cached_prompt_tokens"])
                    + Fraction(e["cached_prompt_tokens"], 10)
                    + 4 * e["completion_tokens"]
                )
                key = (e["tenant_id"], e["model"])
                work[key] = work.get(key, 0) + u * Fraction(hi - lo) / Fraction(f - s)
        busy: float = 0
        end: float | None = None
        for lo, hi in sorted(spans):
            if end is None or lo > end:
                busy += hi - lo
                end = hi
            elif hi > end:
                busy += hi - end
                end = hi
        a_b = c_b * Fraction(busy) / 60
        keys = sorted(work)
        total = sum(work.values())
        raw = [a_b * work[k] / total for k in keys] + [c_b - a_b]
        floors = [Fraction(int(v // Q)) * Q for v in raw]
        units = int((c_b - sum(floors)) / Q)
        for i in sorted(range(len(raw)), key=lambda i: (-(raw[i] - floors[i]), i))[:units]:
            floors[i] += Q
        for k, v in zip([*keys, (None, None)], floors, strict=True):
            out[k] = out.get(k, 0) + v
    return {k: Decimal(v.numerator) / Decimal(v.denominator) for k, v in out.items()}


def ledger_by_key(db_url):
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tenant_id, model, sum(amount) FROM ledger_entries GROUP BY 1, 2")
        ).all()
        kinds = set(conn.execute(text("SELECT DISTINCT entry_kind FROM ledger_entries")).scalars())
    engine.dispose()
    return {(t, m): a for t, m, a in rows}, kinds


def feed(env, tmp_path, kind, records, *extra):
    path = tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    cli(env, "ingest", kind, str(path), *extra)


def step(env, db_url, events, hour_cost, kinds):
    cli(env, "run", "all", "--until-idle")
    got, seen = ledger_by_key(db_url)
    want = reference(events, Fraction(hour_cost))
    assert got == {k: v.quantize(Decimal("1e-12"), rounding=ROUND_FLOOR) for k, v in want.items()}
    assert kinds <= seen
    audit = cli(env, "audit").stdout
    assert "audit passed" in audit


def test_provisional_then_billed_then_late_then_restated(cli_env, settings, tmp_path):
    db = settings.database_url
    feed(cli_env, tmp_path, "rates", [RATE])
    feed(cli_env, tmp_path, "events", EVENTS)
    step(cli_env, db, EVENTS, "36", {"usage", "idle"})

    feed(cli_env, tmp_path, "billing", [bill("bill-1", "30.00")], "--format", "jsonl")
    step(cli_env, db, EVENTS, "30", {"reconciliation"})

    feed(cli_env, tmp_path, "events", [LATE])
    step(cli_env, db, [*EVENTS, LATE], "30", {"late_adjustment"})

    feed(cli_env, tmp_path, "billing", [bill("credit-1", "-3.00", "credit")], "--format", "jsonl")
    step(cli_env, db, [*EVENTS, LATE], "27", {"reconciliation"})

    # re-ingesting the same bill changes nothing
    feed(cli_env, tmp_path, "billing", [bill("bill-1", "30.00")], "--format", "jsonl")
    before, _ = ledger_by_key(db)
    cli(cli_env, "run", "all", "--until-idle")
    assert ledger_by_key(db)[0] == before
