"""The FOCUS 1.0 bill a simulated fleet's provider would send for its rental.

Usage per node per (part of an) hour at a discounted price (:data:`DEMO_DISCOUNTS`), an SLA
credit on a spare node (one serving no model) and a sales-tax line that is not allocated: what
``inferledger demo`` reconciles the provisional ledger against.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from services.ingest.trace.fleet import Fleet

FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "RegionId",
    "ResourceId",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "Tags",
)

# what the provider bills against the list price: a savings plan on the H100s, a smaller
# discount on the A100, list price on the L4s
DEMO_DISCOUNTS = {"H100": Decimal("0.72"), "A100": Decimal("0.90"), "L4": Decimal("1.00")}


def focus_bill(fleet: Fleet, start: datetime, end: datetime) -> list[dict[str, str]]:
    """A FOCUS 1.0 bill for the fleet's rental: usage per node per (part of an) hour at the
    billed price, an SLA credit on the spare node, and a tax line (not allocated)."""
    rows = []
    cuts = [start]
    hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while hour < end:
        cuts.append(hour)
        hour += timedelta(hours=1)
    cuts.append(end)
    period = (start.replace(day=1, hour=0, minute=0, second=0, microsecond=0),)
    month_end = (period[0] + timedelta(days=32)).replace(day=1)

    def row(**values: str) -> dict[str, str]:
        base = {c: "NULL" for c in FOCUS_COLUMNS}
        base.update(
            BillingAccountId="123456789012",
            BillingCurrency=fleet.currency,
            BillingPeriodStart=f"{period[0]:%Y-%m-%d %H:%M:%S}",
            BillingPeriodEnd=f"{month_end:%Y-%m-%d %H:%M:%S}",
            ProviderName=fleet.provider,
            RegionId=fleet.region,
            ServiceCategory="Compute",
            ServiceName="Amazon Elastic Compute Cloud",
        )
        base.update(values)
        return base

    total = Decimal(0)
    for node in fleet.nodes:
        discount = DEMO_DISCOUNTS.get(node.gpu_model, Decimal(1))
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            hours = Decimal((hi - lo).total_seconds()) / 3600
            listed = (node.price_per_hour * hours).quantize(Decimal("1e-10"))
            effective = (listed * discount).quantize(Decimal("1e-10"))
            total += effective
            rows.append(
                row(
                    BilledCost=str(effective),
                    ContractedCost=str(effective),
                    EffectiveCost=str(effective),
                    ListCost=str(listed),
                    ListUnitPrice=str(node.price_per_hour),
                    ChargeCategory="Usage",
                    ChargeDescription=f"{node.instance_type} instance hours",
                    ChargeFrequency="Usage-Based",
                    ChargePeriodStart=f"{lo:%Y-%m-%d %H:%M:%S}",
                    ChargePeriodEnd=f"{hi:%Y-%m-%d %H:%M:%S}",
                    ConsumedQuantity=str(hours),
                    ConsumedUnit="Hours",
                    PricingQuantity=str(hours),
                    PricingUnit="Hours",
                    PricingCategory="Committed" if discount < 1 else "Standard",
                    ResourceId=node.resource_id,
                    ResourceType="Virtual Machine",
                    SkuId=f"SKU-{node.instance_type}",
                    Tags=json.dumps({"team": "inference", "gpu": node.gpu_model}),
                )
            )
    spare = [n for n in fleet.nodes if not n.models]
    if spare:
        rows.append(
            row(
                BilledCost="-20.00",
                EffectiveCost="-20.00",
                ListCost="0",
                ContractedCost="-20.00",
                ChargeCategory="Credit",
                ChargeDescription="SLA credit: capacity not delivered",
                ChargeFrequency="One-Time",
                ChargePeriodStart=f"{start:%Y-%m-%d %H:%M:%S}",
                ChargePeriodEnd=f"{end:%Y-%m-%d %H:%M:%S}",
                ResourceId=spare[0].resource_id,
            )
        )
    tax = (total * Decimal("0.08")).quantize(Decimal("0.01"))
    rows.append(
        row(
            BilledCost=str(tax),
            EffectiveCost=str(tax),
            ListCost=str(tax),
            ContractedCost=str(tax),
            ChargeCategory="Tax",
            ChargeDescription="Sales tax",
            ChargeFrequency="Recurring",
            ChargePeriodStart=f"{start:%Y-%m-%d %H:%M:%S}",
            ChargePeriodEnd=f"{end:%Y-%m-%d %H:%M:%S}",
        )
    )
    return rows


def write_focus_csv(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(FOCUS_COLUMNS), quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)
    return path
