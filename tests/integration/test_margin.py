"""v_tenant_margin and v_api_equivalent held to an independent computation in Python (Decimal,
exact) on a seeded ledger: prices that change mid-day, overlap and end, tenant overrides in
another currency, usage before any price, and entries with failed and cancelled requests
(charged for their tokens, never the per-request fee)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import create_engine, insert, text

from services.contracts import Price
from services.ledger.db import price_row
from services.ledger.schema import prices

PICO = Decimal("1e-12")
MILLION = Decimal(1_000_000)
DAY0 = datetime(2024, 3, 1, tzinfo=UTC)
ENTRY = """INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model,
           resource_id, bucket_start, bucket_seconds, completions, failed_requests,
           prompt_tokens, cached_prompt_tokens, completion_tokens, amount, currency)
           VALUES (:entry_id, :kind, 'provisional', :tenant_id, :model, :resource_id,
                   :bucket_start, 60, :completions, :failed, :prompt, :cached, :completion,
                   :amount, :currency)"""


def _price(rng: random.Random, model: str, tenant: str | None, currency: str,
           start: datetime, end: datetime | None = None, fee: bool = False) -> Price:  # fmt: skip
    def money() -> str:
        return str(Decimal(rng.randint(0, 5_000_000)) / 1000)

    return Price(
        tenant_id=tenant, model=model, currency=currency,
        prompt_per_million=Decimal(money()), cached_prompt_per_million=Decimal(money()),
        completion_per_million=Decimal(money()),
        per_request=Decimal(rng.randint(0, 9999)) / 100000 if fee else None,
        effective_from=start, effective_to=end, source="test",
    )  # fmt: skip


def scenario(seed: int) -> tuple[list[dict[str, Any]], list[Price]]:
    rng = random.Random(seed)
    minute = timedelta(minutes=1)

    def at(day: int, minutes: int) -> datetime:
        return DAY0 + timedelta(days=day) + minutes * minute

    book = [
        # m1's list: open from day 0; a cheaper one from a random minute of day 0 to another
        # of day 1 (then the first is in force again); a newer open one from day 1 afternoon
        _price(rng, "m1", None, "USD", at(0, 0), fee=True),
        _price(rng, "m1", None, "USD", at(0, rng.randint(60, 900)), at(1, rng.randint(1, 700))),
        _price(rng, "m1", None, "USD", at(1, rng.randint(720, 1300)), fee=True),
        # t1's own price for m1, in EUR, from mid-day 0 (overrides the list even where the
        # list's price is newer); t2's own USD price that ends
        _price(rng, "m1", "t1", "EUR", at(0, rng.randint(1, 1400)), fee=True),
        _price(rng, "m1", "t2", "USD", at(0, 300), at(1, 300)),
        # m2 only from the middle of day 0: usage before is unpriced
        _price(rng, "m2", None, "USD", at(0, rng.randint(300, 1000)), fee=True),
        # a hosted model for v_api_equivalent, changing at noon of day 1
        _price(rng, "api/x", None, "USD", at(0, 0), at(1, 720)),
        _price(rng, "api/x", None, "USD", at(1, 720)),
    ]
    entries: list[dict[str, Any]] = []
    for _ in range(300):
        day, m = rng.randint(0, 1), rng.randint(0, 1439)
        resource, currency = rng.choice((("r1", "USD"), ("r2", "USD"), ("r3", "EUR")))
        tenant = rng.choice(("t1", "t2", "t3"))
        prompt = rng.randint(0, 50_000)
        entries.append(
            {
                "entry_id": f"e{len(entries)}",
                "kind": rng.choice(("usage", "usage", "late_adjustment")),
                "tenant_id": tenant, "model": rng.choice(("m1", "m2")), "resource_id": resource,
                "bucket_start": at(day, m), "completions": rng.choice((0, 1, 2, 5)),
                "failed": rng.choice((0, 0, 1, 3)), "prompt": prompt,
                "cached": rng.randint(0, prompt), "completion": rng.randint(0, 9_000),
                "amount": Decimal(rng.randint(0, 10**9)) * PICO, "currency": currency,
            }
        )  # fmt: skip
        if rng.random() < 0.3:  # idle of the same bucket
            entries.append(
                {**entries[-1], "entry_id": f"e{len(entries)}", "kind": "idle", "tenant_id": None,
                 "model": None, "completions": 0, "failed": 0, "prompt": 0, "cached": 0,
                 "completion": 0, "amount": Decimal(rng.randint(0, 10**9)) * PICO}
            )  # fmt: skip
    # a bucket with only failed and cancelled requests: tokens charged, no fee
    entries.append(
        {"entry_id": "failed-only", "kind": "usage", "tenant_id": "t3", "model": "m1",
         "resource_id": "r1", "bucket_start": at(1, 1439), "completions": 0, "failed": 4,
         "prompt": 1000, "cached": 0, "completion": 10, "amount": Decimal("0.5"),
         "currency": "USD"}
    )  # fmt: skip
    return entries, book


def in_force(book: list[dict[str, Any]], tenant: str | None, model: str, t: datetime) -> Any:
    """The rule of docs/sql.md#the-price-in-force, written again: the tenant's own before the
    list, then the latest effective_from, then (one received_at here) the lowest price_id."""
    live = [
        p
        for p in book
        if p["model"] == model
        and p["tenant_id"] in (tenant, None)
        and p["effective_from"] <= t
        and (p["effective_to"] is None or t < p["effective_to"])
    ]
    live.sort(key=lambda p: p["price_id"])
    live.sort(key=lambda p: p["effective_from"], reverse=True)
    live.sort(key=lambda p: p["tenant_id"] is None)
    return live[0] if live else None


def charge(e: dict[str, Any], p: dict[str, Any]) -> Decimal:
    tokens = (
        (e["prompt"] - e["cached"]) * p["prompt_per_million"]
        + e["cached"] * p["cached_prompt_per_million"]
        + e["completion"] * p["completion_per_million"]
    ) / MILLION  # exact: Decimal's context has 28 digits, these need fewer
    return tokens + e["completions"] * (p["per_request"] or 0)


def q12(value: Decimal) -> Decimal:
    return value.quantize(PICO, rounding=ROUND_HALF_UP)


def test_margin_and_api_equivalent_on_a_seeded_ledger(db_url: str) -> None:
    entries, book = scenario(18)
    rows = [price_row(p) for p in book]
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(prices), rows)
        conn.execute(text(ENTRY), entries)

    revenue: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    unpriced: dict[tuple[Any, ...], int] = defaultdict(int)
    cost: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    api: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    charged_keys: set[tuple[Any, ...]] = set()
    for e in entries:
        if e["tenant_id"] is None:
            continue
        day: date = e["bucket_start"].date()
        cost[(day, e["tenant_id"], e["model"], e["currency"])] += e["amount"]
        if not (e["prompt"] or e["completion"] or e["cached"] or e["completions"]):
            continue
        p = in_force(rows, e["tenant_id"], e["model"], e["bucket_start"])
        key = (day, e["tenant_id"], e["model"], p["currency"] if p else e["currency"])
        if p is None:
            unpriced[key] += e["prompt"] + e["completion"]
            revenue.setdefault(key, Decimal(0))
        else:
            revenue[key] += charge(e, p)
            charged_keys.add(key)
        a = in_force(rows, None, "api/x", e["bucket_start"])
        api[(day, e["tenant_id"], e["model"], e["currency"])] += charge(e, a)

    with engine.connect() as conn:
        got = {
            (r.day, r.tenant_id, r.model, r.currency): r
            for r in conn.execute(text("SELECT * FROM v_tenant_margin")).mappings()
        }
        with_idle = {
            (r.day, r.tenant_id, r.model, r.currency): r.amount_with_idle
            for r in conn.execute(
                text("SELECT * FROM v_cost_per_completion_with_idle WHERE tenant_id IS NOT NULL")
            ).mappings()
        }
        got_api = {
            (r.day, r.tenant_id, r.model, r.currency): r
            for r in conn.execute(
                text("SELECT * FROM v_api_equivalent WHERE api_model = 'api/x'")
            ).mappings()
        }
    assert set(got) == set(revenue) | set(cost)
    currencies = {k[3] for k in got}
    assert currencies == {"USD", "EUR"}
    for key, row in got.items():
        want_revenue = q12(revenue[key]) if key in charged_keys else None
        want_cost = cost.get(key)
        assert row.revenue == want_revenue, key
        assert row.cost == want_cost, key
        assert row.cost_with_idle == with_idle.get(key), key
        assert row.unpriced_tokens == unpriced.get(key, 0), key
        assert row.unpriced_revenue == (unpriced.get(key, 0) > 0), key
        if want_revenue is None or want_cost is None:
            assert row.margin is None and row.margin_with_idle is None, key
            continue
        assert row.margin == want_revenue - want_cost, key
        assert row.margin_with_idle == want_revenue - with_idle[key], key
        if want_revenue:
            pct = ((want_revenue - want_cost) * 100 / want_revenue).quantize(
                Decimal("0.0001"), rounding=ROUND_HALF_UP
            )
            assert row.margin_pct == pct, key
    # t1's EUR override: revenue in EUR where its cost is USD, so some rows have no margin
    assert any(k[1] == "t1" and k[3] == "EUR" and got[k].revenue is not None for k in got)
    assert any((r.revenue is None) != (r.cost is None) and r.margin is None for r in got.values())
    # m2 before its first price: unpriced usage is flagged
    assert any(r.unpriced_revenue for r in got.values())
    # the failed-only bucket: its tokens at the price in force, no per-request fee
    p = in_force(rows, "t3", "m1", DAY0 + timedelta(days=1, minutes=1439))
    assert p["per_request"] and p["per_request"] > 0
    failed = next(e for e in entries if e["entry_id"] == "failed-only")
    assert (
        charge(failed, p)
        == (1000 * p["prompt_per_million"] + 10 * p["completion_per_million"]) / MILLION
    )

    assert set(got_api) == set(api)
    for key, row in got_api.items():
        assert row.api_cost == q12(api[key]), key
        assert row.api_currency == "USD" and row.unpriced is False
        assert row.cost_with_idle == with_idle.get(key), key
        if key[3] == "USD":
            assert row.saving_with_idle == q12(api[key]) - with_idle[key], key
        else:
            assert row.saving_with_idle is None, key
    engine.dispose()


def test_the_charged_rule_on_one_bucket(db_url: str) -> None:
    """Two entries of one bucket: completions pay tokens and the fee, failed and cancelled
    requests their tokens only; a tenant's override beats a newer list price."""
    t = DAY0 + timedelta(hours=3)
    book = [
        Price(model="m", currency="USD", prompt_per_million=Decimal("10"),
              cached_prompt_per_million=Decimal("1"), completion_per_million=Decimal("30"),
              per_request=Decimal("0.5"), effective_from=t - timedelta(hours=1)),
        Price(tenant_id="a", model="m", currency="USD", prompt_per_million=Decimal("2"),
              cached_prompt_per_million=Decimal("1"), completion_per_million=Decimal("4"),
              per_request=Decimal("0.25"), effective_from=t - timedelta(hours=2)),
    ]  # fmt: skip
    base = {"kind": "usage", "model": "m", "resource_id": "r", "bucket_start": t,
            "amount": Decimal("0.1"), "currency": "USD"}  # fmt: skip
    entries = [
        {**base, "entry_id": "ok", "tenant_id": "b", "completions": 2, "failed": 0,
         "prompt": 3000, "cached": 1000, "completion": 500},
        {**base, "entry_id": "bad", "tenant_id": "b", "completions": 0, "failed": 3,
         "prompt": 1000, "cached": 0, "completion": 100},
        {**base, "entry_id": "own", "tenant_id": "a", "completions": 1, "failed": 1,
         "prompt": 1000, "cached": 0, "completion": 1000},
    ]  # fmt: skip
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(prices), [price_row(p) for p in book])
        conn.execute(text(ENTRY), entries)
    with engine.connect() as conn:
        got: dict[str, Decimal] = {
            t: r for t, r in conn.execute(text("SELECT tenant_id, revenue FROM v_tenant_margin"))
        }
    engine.dispose()
    # b: (2000×10 + 1000×1 + 500×30)/10^6 + 2×0.5, then (1000×10 + 100×30)/10^6 and no fee
    assert got["b"] == Decimal("0.036") + Decimal("1.0") + Decimal("0.013")
    # a: its own price (2 / 4, 0.25 per completion), not the newer list
    assert got["a"] == Decimal("0.006") + Decimal("0.25")
