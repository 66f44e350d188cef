"""``inferledger export focus``'s pure part: the columns against FOCUS's list, the split of
origin charges into allocated charges, exact sums, CSV quoting."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.ledger.focuscolumns import FOCUS_COLUMNS, REQUIRED_NOT_NULL, is_valid_column
from services.ledger.focusexport import (
    COLUMNS,
    METHOD_ID,
    BilledLine,
    Position,
    allocate,
    largest_remainder,
    to_rows,
    write_csv,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def worked_example(scale: Decimal = Decimal(1)) -> list[Position]:
    """The worked example's ledger (DESIGN section 3), each bucket times ``scale``."""
    b1 = T0 + timedelta(seconds=60)
    rows = [
        (T0, "acme", "llama-70b", "0.277992277992"),
        (T0, "beta", "llama-70b", "0.083397683398"),
        (T0, "acme", "llama-8b", "0.038610038610"),
        (T0, None, None, "0.200000000000"),
        (b1, "acme", "llama-8b", "0.100000000000"),
        (b1, None, None, "0.500000000000"),
    ]
    return [
        Position("node-1", t, tenant, model, "USD", Decimal(a) * scale)
        for t, tenant, model, a in rows
    ]


def line(line_id: str, cost: str, start: datetime = T0, end: datetime = T0 + HOUR) -> BilledLine:
    return BilledLine(line_id, "node-1", start, end, Decimal(cost), "USD", "usage", "AWS", "p5")


def as_csv(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    buf = io.StringIO(newline="")
    write_csv(rows, buf)
    return list(csv.DictReader(io.StringIO(buf.getvalue(), newline="")))


def check_focus(rows: list[dict[str, str]]) -> None:
    """Every column a FOCUS column or x_; the required ones present and filled; per origin the
    allocated BilledCost and EffectiveCost sum exactly to the origin's."""
    assert rows
    for name in rows[0]:
        assert is_valid_column(name), name
    for name in REQUIRED_NOT_NULL:
        assert name in rows[0], name
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    origin: dict[str, Decimal] = {}
    for r in rows:
        for name in REQUIRED_NOT_NULL:
            assert r[name] != "", (name, r)
        assert r["AllocatedMethodId"] == METHOD_ID
        json.loads(r["AllocatedMethodDetails"])["Elements"][0]["AllocatedRatio"]
        json.loads(r["AllocatedTags"])
        assert r["ChargePeriodStart"].endswith("Z") and r["ChargePeriodEnd"].endswith("Z")
        sums[r["x_OriginChargeId"]][0] += Decimal(r["BilledCost"])
        sums[r["x_OriginChargeId"]][1] += Decimal(r["EffectiveCost"])
        origin[r["x_OriginChargeId"]] = Decimal(r["x_OriginBilledCost"])
    for charge, (billed, effective) in sums.items():
        assert billed == effective == origin[charge], charge


def test_columns_are_focus_columns_or_custom():
    assert all(is_valid_column(c) for c in COLUMNS)
    assert set(REQUIRED_NOT_NULL) <= set(COLUMNS)
    assert not is_valid_column("Cost") and not is_valid_column("x_")
    for c in ("AllocatedMethodId", "AllocatedMethodDetails", "AllocatedResourceId"):
        assert c in FOCUS_COLUMNS
    for c in ("AllocatedResourceName", "AllocatedTags", "BilledCost", "ChargePeriodStart"):
        assert c in FOCUS_COLUMNS
    # the FOCUS 1.0 sample this project ingests: every column but its extra "Id" is known
    with open("tests/data/focus-1.0-sample-1000.csv", encoding="utf-8-sig") as f:
        header = next(csv.reader(f))
    assert set(header) - FOCUS_COLUMNS == {"Id"}


def test_provisional_worked_example():
    got = allocate([], worked_example(), T0, T0 + timedelta(days=1))
    rows = as_csv(list(to_rows(got)))
    check_focus(rows)
    assert {r["x_OriginChargeId"] for r in rows} == {"provisional:node-1:USD:2024-01-01T00:00:00Z"}
    assert rows[0]["x_OriginBilledCost"] == "1.200000000000"
    assert rows[0]["ChargeDescription"] == "provisional GPU rate charge"
    assert rows[0]["ChargeCategory"] == "Usage"
    by = {
        (json.loads(r["AllocatedTags"]).get("inferledger/tenant"), r["x_CostBasis"]): r
        for r in rows
    }
    per_tenant: dict[str | None, Decimal] = defaultdict(Decimal)
    for r in rows:
        per_tenant[json.loads(r["AllocatedTags"]).get("inferledger/tenant")] += Decimal(
            r["BilledCost"]
        )
    assert per_tenant == {
        "acme": Decimal("0.416602316602"),
        "beta": Decimal("0.083397683398"),
        None: Decimal("0.700000000000"),
    }
    idle = by[(None, "provisional")]
    assert idle["AllocatedResourceId"] == "" and json.loads(idle["AllocatedTags"]) == {
        "inferledger/kind": "idle"
    }
    beta = by[("beta", "provisional")]
    assert beta["AllocatedResourceId"] == "beta/llama-70b"
    assert json.loads(beta["AllocatedTags"]) == {
        "inferledger/kind": "usage",
        "inferledger/model": "llama-70b",
        "inferledger/tenant": "beta",
    }


def test_billed_line_and_credit_split_pro_rata_and_exactly():
    # billed 30 then credited 3: the ledger holds the worked example at 27/36 of its cost
    positions = worked_example(Decimal(27) / Decimal("1.2") / 30)
    lines = [line("bill-1", "30.000000000000"), line("credit-1", "-3.000000000000")]
    # the ledger's buckets are rounded per bucket to 1e-12: make them exact for the check
    positions = [
        Position(
            p.resource_id,
            p.bucket_start,
            p.tenant_id,
            p.model,
            p.currency,
            p.amount.quantize(Decimal("1e-12")),
        )
        for p in positions
    ]
    total = sum((p.amount for p in positions), Decimal(0))
    # one hour of billed lines over two minutes of ledger: the rest is unallocated
    got = allocate(lines, positions, T0, T0 + HOUR)
    rows = as_csv(list(to_rows(got)))
    check_focus(rows)
    assert {r["x_OriginChargeId"] for r in rows} == {"bill-1", "credit-1"}
    assert all(r["ResourceId"] == "node-1" and r["SkuId"] == "p5" for r in rows)
    assert all(r["ChargePeriodStart"] == "2024-01-01T00:00:00Z" for r in rows)
    assert all(r["ChargePeriodEnd"] == "2024-01-01T01:00:00Z" for r in rows)
    unallocated = [r for r in rows if r["x_UnallocatedReason"]]
    assert len(unallocated) == 2
    assert sum(Decimal(r["BilledCost"]) for r in unallocated) == Decimal(27) - total
    allocated = sum(Decimal(r["BilledCost"]) for r in rows if not r["x_UnallocatedReason"])
    assert abs(allocated - total) <= Decimal("1e-11")


def test_line_alone_on_its_period_gets_the_ledgers_amounts():
    two_minutes = T0 + timedelta(seconds=120)
    got = allocate([line("bill-1", "1.2", T0, two_minutes)], worked_example(), T0, T0 + HOUR)
    rows = as_csv(list(to_rows(got)))
    check_focus(rows)
    assert not any(r["x_UnallocatedReason"] for r in rows)
    amounts = sorted(Decimal(r["BilledCost"]) for r in rows)
    assert amounts == sorted(
        Decimal(a) for a in ("0.277992277992", "0.083397683398", "0.138610038610", "0.700000000000")
    )
    # granularity hour keeps the same period (it is inside one hour); per minute is not offered
    hourly = as_csv(
        list(
            to_rows(
                allocate(
                    [line("bill-1", "1.2", T0, two_minutes)],
                    worked_example(),
                    T0,
                    T0 + HOUR,
                    "hour",
                )
            )
        )
    )
    assert sorted(Decimal(r["BilledCost"]) for r in hourly) == amounts


def test_granularity_splits_a_daily_line_into_hours():
    day = T0 + timedelta(days=1)
    positions = [
        Position("node-1", T0 + timedelta(hours=h), "acme", "m", "USD", Decimal("0.5"))
        for h in range(24)
    ] + [
        Position("node-1", T0 + timedelta(hours=h), None, None, "USD", Decimal("0.5"))
        for h in range(24)
    ]
    got = allocate([line("day-1", "24", T0, day)], positions, T0, day, "hour")
    rows = as_csv(list(to_rows(got)))
    check_focus(rows)
    assert len(rows) == 48
    assert {r["ChargePeriodStart"] for r in rows} == {
        (T0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(24)
    }
    assert all(r["BillingPeriodStart"] == "2024-01-01T00:00:00Z" for r in rows)
    assert all(r["BillingPeriodEnd"] == "2024-02-01T00:00:00Z" for r in rows)


def test_lines_netting_to_zero_are_unallocated_whole():
    lines = [line("bill-1", "5"), line("credit-1", "-5")]
    rows = as_csv(list(to_rows(allocate(lines, worked_example(), T0, T0 + HOUR))))
    check_focus(rows)
    assert len(rows) == 2 and all(r["x_UnallocatedReason"] for r in rows)


def test_provisional_outside_billed_buckets_only():
    positions = worked_example() + [Position("node-1", T0 + HOUR, "acme", "m", "USD", Decimal("2"))]
    two_minutes = T0 + timedelta(seconds=120)
    got = allocate([line("bill-1", "1.2", T0, two_minutes)], positions, T0, T0 + 2 * HOUR)
    rows = as_csv(list(to_rows(got)))
    check_focus(rows)
    provisional = [r for r in rows if r["x_CostBasis"] == "provisional"]
    assert [r["BilledCost"] for r in provisional] == ["2"]


def test_hostile_tenant_round_trips_through_csv():
    tenant = 'ev"il, te\nnant\r/x%2F'
    model = 'm,"1"/2'
    positions = [
        Position("node-1", T0, tenant, model, "USD", Decimal("0.25")),
        Position("node-1", T0, None, None, "USD", Decimal("0.35")),
    ]
    rows = as_csv(list(to_rows(allocate([], positions, T0, T0 + HOUR))))
    check_focus(rows)
    mine = [r for r in rows if r["AllocatedResourceName"]]
    assert len(mine) == 1
    tags = json.loads(mine[0]["AllocatedTags"])
    assert tags["inferledger/tenant"] == tenant and tags["inferledger/model"] == model
    assert "/" not in mine[0]["AllocatedResourceId"].replace("/", "", 1)
    only = as_csv(list(to_rows(allocate([], positions, T0, T0 + HOUR), tenant=tenant)))
    assert len(only) == 1 and json.loads(only[0]["AllocatedTags"])["inferledger/tenant"] == tenant


def test_largest_remainder_is_exact():
    from fractions import Fraction

    raw = [Fraction(1, 3), Fraction(1, 3), Fraction(1, 3)]
    assert sum(largest_remainder(raw, Decimal(1))) == Decimal(1)
    assert largest_remainder(raw, Decimal(1))[0] == Decimal("0.333333333334")
