"""v_cost_per_completion_with_idle and v_tenant_spend on hand-made ledgers: the idle share of
each resource-day goes to its tenants and their models in proportion to busy cost, and a day's
rows add up to the day's ledger amounts exactly, unshared idle included."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import create_engine, text

ENTRY = """INSERT INTO ledger_entries (entry_id, entry_kind, cost_basis, tenant_id, model,
           resource_id, bucket_start, bucket_seconds, completions, prompt_tokens,
           completion_tokens, amount, currency)
           VALUES (:id, :kind, :basis, :tenant, :model, :resource, :at, 60, :completions,
                   :prompt, :completion, :amount, :currency)"""
PICO = Decimal("1e-12")
COST_COLUMNS = [
    "day", "tenant_id", "model", "currency", "completions", "failed_requests", "prompt_tokens",
    "cached_prompt_tokens", "completion_tokens", "amount", "cost_per_completion",
    "cost_per_1k_tokens", "has_unpriced",
]  # fmt: skip
ADDED = [
    "idle_share", "amount_with_idle", "cost_per_completion_with_idle",
    "cost_per_1k_tokens_with_idle", "unshared_idle",
]  # fmt: skip

Row = tuple[str, str | None, str | None, str, datetime, str, str, int]


def entry(
    kind: str, tenant: str | None, model: str | None, resource: str, at: datetime, amount: str,
    currency: str = "USD", completions: int = 0,
) -> Row:  # fmt: skip
    return (kind, tenant, model, resource, at, amount, currency, completions)


def insert(engine: Any, rows: list[Row]) -> None:
    params = [
        {"id": uuid.uuid4().hex, "kind": kind, "tenant": tenant, "model": model,
         "resource": resource, "at": at, "amount": Decimal(amount), "currency": currency,
         "completions": completions, "prompt": 100 * completions, "completion": 20 * completions,
         "basis": "unpriced" if kind == "usage" and Decimal(amount) == 0 else "provisional"}
        for kind, tenant, model, resource, at, amount, currency, completions in rows
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text(ENTRY), params)


def fetch(engine: Any, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).mappings())


def check_exact(engine: Any) -> None:
    """Per day and currency: the view's amount_with_idle adds up to the ledger's amounts, its
    idle_share to the idle entries; its tenant rows are v_cost_per_completion's; per tenant and
    day it agrees with v_tenant_idle_share and v_tenant_spend."""
    ledger = {
        (r["day"], r["currency"]): (r["total"], r["idle"])
        for r in fetch(engine, """SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, currency,
                                  sum(amount) AS total,
                                  coalesce(sum(amount) FILTER (WHERE tenant_id IS NULL), 0) AS idle
                                  FROM ledger_entries GROUP BY 1, 2""")
    }  # fmt: skip
    view = fetch(engine, "SELECT * FROM v_cost_per_completion_with_idle")
    assert list(view[0].keys()) == COST_COLUMNS + ADDED
    sums: dict[tuple[date, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for r in view:
        sums[(r["day"], r["currency"])][0] += r["amount_with_idle"]
        sums[(r["day"], r["currency"])][1] += r["idle_share"]
        assert r["amount_with_idle"] == r["amount"] + r["idle_share"]
        assert r["unshared_idle"] == (r["tenant_id"] is None)
        if r["unshared_idle"]:
            assert r["model"] is None and r["amount"] == 0 and r["completions"] == 0
    assert set(sums) == set(ledger)
    for key, (total, idle) in ledger.items():
        assert sums[key] == [total, idle], key  # exactly: to the last 1e-12

    plain = {
        (r["day"], r["tenant_id"], r["model"], r["currency"]): dict(r)
        for r in fetch(engine, "SELECT * FROM v_cost_per_completion")
    }
    with_idle = {
        (r["day"], r["tenant_id"], r["model"], r["currency"]): {c: r[c] for c in COST_COLUMNS}
        for r in view
        if not r["unshared_idle"]
    }
    assert with_idle == plain

    per_tenant: dict[tuple[Any, ...], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    for r in view:
        if not r["unshared_idle"]:
            per_tenant[(r["tenant_id"], r["currency"], r["day"])][0] += r["amount"]
            per_tenant[(r["tenant_id"], r["currency"], r["day"])][1] += r["idle_share"]
    shares: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for r in fetch(engine, "SELECT * FROM v_tenant_idle_share"):
        shares[(r["tenant_id"], r["currency"], r["day"])] += r["idle_share"]
    spend = fetch(engine, "SELECT * FROM v_tenant_spend")
    assert list(spend[0].keys()) == [
        "tenant_id", "currency", "day", "amount", "idle_share", "amount_with_idle", "has_unpriced",
    ]  # fmt: skip
    assert {(r["tenant_id"], r["currency"], r["day"]): [r["amount"], r["idle_share"]]
            for r in spend} == per_tenant  # fmt: skip
    for key, (_, idle_share) in per_tenant.items():
        assert idle_share == shares.get(key, 0), key
    for r in spend:
        assert r["amount_with_idle"] == r["amount"] + r["idle_share"]


D = datetime(2024, 3, 1, tzinfo=UTC)
M = timedelta(minutes=1)


def test_a_multi_tenant_multi_model_ledger_with_an_untouched_resource(db_url):
    engine = create_engine(db_url)
    insert(engine, [
        # node-1: acme on two models (one reconciled down), beta on one; idle 1.00 in two buckets
        entry("usage", "acme", "llama-70b", "node-1", D, "0.30", completions=3),
        entry("usage", "acme", "llama-8b", "node-1", D, "0.10", completions=1),
        entry("reconciliation", "acme", "llama-8b", "node-1", D, "-0.01"),
        entry("usage", "beta", "llama-70b", "node-1", D + M, "0.20", completions=2),
        entry("idle", None, None, "node-1", D, "0.60"),
        entry("idle", None, None, "node-1", D + M, "0.40"),
        # node-2: acme priced, gamma unpriced (weighs 0): acme takes all the idle
        entry("usage", "acme", "llama-8b", "node-2", D, "0.05", completions=1),
        entry("usage", "gamma", "mistral-7b", "node-2", D, "0", completions=4),
        entry("idle", None, None, "node-2", D, "0.25"),
        # node-3: untouched, idle only: stays unshared
        entry("idle", None, None, "node-3", D, "0.70"),
        entry("idle", None, None, "node-3", D + M, "0.30"),
        # node-4: three tenants of equal busy cost, thirds of 0.10
        entry("usage", "acme", "llama-70b", "node-4", D, "0.01", completions=1),
        entry("usage", "beta", "llama-70b", "node-4", D, "0.01", completions=1),
        entry("usage", "delta", "llama-70b", "node-4", D, "0.01", completions=1),
        entry("idle", None, None, "node-4", D, "0.10"),
        # node-5: acme in EUR
        entry("usage", "acme", "llama-70b", "node-5", D, "2", "EUR", completions=1),
        entry("idle", None, None, "node-5", D, "1", "EUR"),
        # node-6: no positive busy cost (delta nets -0.03, epsilon is unpriced): equal shares of
        # 0.11; within delta, llama-70b weighs 0.05 and llama-8b (credited) 0
        entry("usage", "delta", "llama-70b", "node-6", D, "0.05", completions=1),
        entry("reconciliation", "delta", "llama-8b", "node-6", D, "-0.08"),
        entry("usage", "epsilon", "mistral-7b", "node-6", D, "0", completions=1),
        entry("idle", None, None, "node-6", D, "0.11"),
        # the next day: node-1 untouched, node-2 beta alone
        entry("idle", None, None, "node-1", D + timedelta(days=1), "0.50"),
        entry("usage", "beta", "llama-8b", "node-2", D + timedelta(days=1), "0.02", completions=1),
        entry("idle", None, None, "node-2", D + timedelta(days=1), "0.03"),
    ])  # fmt: skip
    check_exact(engine)

    rows = {
        (r["day"].day, r["tenant_id"], r["model"], r["currency"]): r
        for r in fetch(engine, "SELECT * FROM v_cost_per_completion_with_idle")
    }
    # node-1: acme 0.39 and beta 0.20 of busy cost share 1.00 of idle (acme first):
    # acme round(1.00 * 0.39 / 0.59, 12) = 0.661016949153, beta 0.338983050847; acme's share
    # among its models, llama-70b first: round(0.661016949153 * 0.30 / 0.39, 12) =
    # 0.508474576272, llama-8b 0.152542372881. node-2: acme 0.25. node-4: thirds of 0.10,
    # cumulative: 0.033333333333, 0.033333333334, 0.033333333333. node-6: 0.055 each.
    idle = {k: r["idle_share"] for k, r in rows.items()}
    assert idle == {
        (1, "acme", "llama-70b", "USD"): Decimal("0.508474576272") + Decimal("0.033333333333"),
        (1, "acme", "llama-8b", "USD"): Decimal("0.152542372881") + Decimal("0.25"),
        (1, "beta", "llama-70b", "USD"): Decimal("0.338983050847") + Decimal("0.033333333334"),
        (1, "delta", "llama-70b", "USD"): Decimal("0.033333333333") + Decimal("0.055"),
        (1, "delta", "llama-8b", "USD"): Decimal(0),
        (1, "epsilon", "mistral-7b", "USD"): Decimal("0.055"),
        (1, "gamma", "mistral-7b", "USD"): Decimal(0),
        (1, None, None, "USD"): Decimal("1.00"),
        (1, "acme", "llama-70b", "EUR"): Decimal("1"),
        (2, "beta", "llama-8b", "USD"): Decimal("0.03"),
        (2, None, None, "USD"): Decimal("0.50"),
    }
    acme70 = rows[(1, "acme", "llama-70b", "USD")]
    assert acme70["amount"] == Decimal("0.31") and acme70["completions"] == 4
    assert acme70["amount_with_idle"] == Decimal("0.31") + Decimal("0.541807909605")
    assert acme70["cost_per_completion_with_idle"] == Decimal("0.212951977401")  # 0.851807909605/4
    assert acme70["cost_per_1k_tokens_with_idle"] == Decimal("1.774599811677")  # per 480 tokens
    gamma = rows[(1, "gamma", "mistral-7b", "USD")]
    assert gamma["has_unpriced"] is True and gamma["cost_per_completion_with_idle"] == 0
    unshared = rows[(1, None, None, "USD")]
    assert unshared["cost_per_completion"] is None and unshared["has_unpriced"] is False

    spend = {
        (r["tenant_id"], r["currency"], r["day"].day): (r["amount"], r["amount_with_idle"])
        for r in fetch(engine, "SELECT * FROM v_tenant_spend")
    }
    assert spend[("acme", "USD", 1)] == (
        Decimal("0.45"),
        Decimal("0.45") + Decimal("0.661016949153") + Decimal("0.25") + Decimal("0.033333333333"),
    )
    assert spend[("beta", "USD", 2)] == (Decimal("0.02"), Decimal("0.05"))
    engine.dispose()


def random_amount(rng: random.Random, low: int, high: int) -> str:
    return str(Decimal(rng.randint(low, high)) * PICO)


def test_random_ledgers_add_up_exactly_and_share_in_proportion(db_url):
    """Thirty independent days of random resources, tenants, models, credits and idle entries:
    exact sums, and each (tenant, model) idle share within 2e-12 per resource of its exact
    proportion."""
    rng = random.Random(20261130)
    rows: list[Row] = []
    for k in range(30):
        day = D + timedelta(days=k)
        for n in range(rng.randint(1, 5)):
            resource = f"node-{n}"
            currency = rng.choice(["USD", "USD", "EUR"])
            tenants = (
                [] if rng.random() < 0.25 else rng.sample(["a", "b", "c", "d"], rng.randint(1, 4))
            )
            for tenant in tenants:
                for model in rng.sample(["m1", "m2", "m3"], rng.randint(1, 3)):
                    for _ in range(rng.randint(1, 3)):
                        kind = rng.choice(["usage", "usage", "late_adjustment", "reconciliation"])
                        low = 0 if kind == "usage" else -(10**11)
                        amount = random_amount(rng, low, 10**12)
                        at = day + M * rng.randint(0, 1439)
                        rows.append(entry(kind, tenant, model, resource, at, amount, currency,
                                          rng.randint(0, 3)))  # fmt: skip
            if not tenants or rng.random() < 0.9:
                for _ in range(rng.randint(1, 3)):
                    at = day + M * rng.randint(0, 1439)
                    rows.append(entry("idle", None, None, resource, at,
                                      random_amount(rng, 0, 10**12), currency))  # fmt: skip
    engine = create_engine(db_url)
    insert(engine, rows)
    check_exact(engine)

    # each (tenant, model)'s idle share against its exact proportion, resource by resource
    busy: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    idle: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for _kind, owner, served, resource, at, amount, currency, _ in rows:
        key = (at.date(), resource, currency)
        if owner is None:
            idle[key] += Decimal(amount)
        else:
            busy[(*key, owner, served)] += Decimal(amount)
    exact: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    resources: dict[tuple[Any, ...], int] = defaultdict(int)
    for key, idle_cost in idle.items():
        # as the views weigh: a tenant by its net busy cost, a model within it by its own
        mine = {k[3:]: v for k, v in busy.items() if k[:3] == key}
        net: dict[str, Decimal] = defaultdict(Decimal)
        positive: dict[str, Decimal] = defaultdict(Decimal)
        for (who, _), v in mine.items():
            net[who] += v
            positive[who] += max(v, Decimal(0))
        total = sum((max(v, Decimal(0)) for v in net.values()), Decimal(0))
        for (who, what), v in mine.items():
            t_share = (idle_cost * max(net[who], Decimal(0)) / total if total > 0
                       else idle_cost / len(net))  # fmt: skip
            models = [m for (t, m) in mine if t == who]
            exact[(key[0], who, what, key[2])] += (
                t_share * max(v, Decimal(0)) / positive[who] if positive[who] > 0
                else t_share / len(models)
            )  # fmt: skip
            resources[(key[0], who, what, key[2])] += 1
    view = fetch(engine, "SELECT * FROM v_cost_per_completion_with_idle WHERE NOT unshared_idle")
    assert len(view) > 100
    for r in view:
        at_key = (r["day"], r["tenant_id"], r["model"], r["currency"])
        assert abs(r["idle_share"] - exact[at_key]) <= 2 * PICO * max(resources[at_key], 1), at_key
    engine.dispose()
