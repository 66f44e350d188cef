"""FOCUS 1.0+ billing exports (CSV or gzip CSV) to ``BillingLine`` messages.

FOCUS columns used: ``ResourceId``, ``ChargePeriodStart``, ``ChargePeriodEnd``,
``ChargeCategory``, ``BillingCurrency``, ``ProviderName``, ``SkuId``, ``PricingCategory``,
``ChargeDescription``, ``Tags`` (JSON) and the cost column chosen with ``cost_column``
(``EffectiveCost`` by default, or ``BilledCost``, ``ListCost``, ``ContractedCost``). The literal
``NULL`` and the empty string are empty values. FOCUS datetimes are UTC by definition; a value
without an offset (as in many exports) is read as UTC. ``line_id`` is a hash of the whole
source row and of how many identical rows came before it in the file, so re-ingesting a file
gives the same ids and two identical charges stay two lines.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from pydantic import ValidationError

from services.contracts import BillingLine

COST_COLUMNS = ("EffectiveCost", "BilledCost", "ListCost", "ContractedCost")
REQUIRED = ("ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "BillingCurrency")


@dataclass
class FocusSummary:
    cost_column: str
    rows: int = 0
    published: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    without_resource_id: int = 0
    chosen_cost_empty_or_zero_other_not: int = 0
    examples: list[str] = field(default_factory=list)
    by_category: Counter[str] = field(default_factory=Counter)
    by_provider: Counter[str] = field(default_factory=Counter)
    cost_total: Decimal = Decimal(0)
    tags_invalid_json: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cost_column": self.cost_column,
            "rows": self.rows,
            "published": self.published,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "without_resource_id": self.without_resource_id,
            "chosen_cost_empty_or_zero_while_another_is_not": (
                self.chosen_cost_empty_or_zero_other_not
            ),
            "examples": self.examples[:10],
            "by_charge_category": dict(self.by_category),
            "by_provider": dict(self.by_provider),
            "cost_total": format(self.cost_total, "f"),
            "tags_invalid_json": self.tags_invalid_json,
        }


def _value(row: dict[str, str | None], column: str) -> str | None:
    v = row.get(column)
    if v is None:
        return None
    v = v.strip()
    return None if v == "" or v.upper() == "NULL" else v


def _time(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None


def open_text(stream: IO[bytes]) -> io.TextIOWrapper:
    head = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
    if head == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=stream), encoding="utf-8-sig", newline="")
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def read_focus(
    stream: IO[bytes], cost_column: str = "EffectiveCost"
) -> Iterator[tuple[int, dict[str, str | None], BillingLine | str]]:
    """Yield ``(line number, raw row, BillingLine or the reason it was skipped)``."""
    if cost_column not in COST_COLUMNS:
        raise ValueError(f"cost column must be one of {', '.join(COST_COLUMNS)}")
    reader = csv.DictReader(open_text(stream))
    missing = [c for c in (*REQUIRED, cost_column) if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"not a FOCUS export: missing columns {', '.join(missing)}")
    seen: Counter[str] = Counter()
    for n, row in enumerate(reader, start=2):
        canonical = json.dumps(row, sort_keys=True)
        seen[canonical] += 1
        digest = hashlib.sha256(f"{canonical}|{seen[canonical]}".encode()).hexdigest()[:32]
        try:
            for column in REQUIRED:
                if _value(row, column) is None:
                    raise ValueError(f"missing {column}")
            cost = _decimal(_value(row, cost_column)) or Decimal(0)
            line = BillingLine(
                line_id=f"focus-{digest}",
                resource_id=_value(row, "ResourceId"),
                period_start=_time(_value(row, "ChargePeriodStart") or ""),
                period_end=_time(_value(row, "ChargePeriodEnd") or ""),
                cost=cost,
                currency=(_value(row, "BillingCurrency") or "").upper(),
                charge_category=(_value(row, "ChargeCategory") or "").lower(),
                source="focus",
                provider=_value(row, "ProviderName"),
                sku=_value(row, "SkuId"),
                pricing_category=_value(row, "PricingCategory"),
                description=_value(row, "ChargeDescription"),
            )
        except (ValueError, ValidationError) as exc:
            yield n, row, f"invalid row: {str(exc).splitlines()[0]}"
            continue
        yield n, row, line


def summarize(summary: FocusSummary, n: int, row: dict[str, str | None], line: BillingLine) -> None:
    summary.by_category[line.charge_category] += 1
    summary.by_provider[line.provider or "unknown"] += 1
    summary.cost_total += line.cost
    if line.resource_id is None:
        summary.without_resource_id += 1
    tags = _value(row, "Tags")
    if tags is not None:
        try:
            json.loads(tags)
        except json.JSONDecodeError:
            summary.tags_invalid_json += 1
    if line.cost == 0:
        others = [
            c
            for c in COST_COLUMNS
            if c != summary.cost_column and (_decimal(_value(row, c)) or Decimal(0)) != 0
        ]
        if others:
            summary.chosen_cost_empty_or_zero_other_not += 1
            if len(summary.examples) < 10:
                summary.examples.append(
                    f"line {n}: {summary.cost_column} is empty or 0, {others[0]} is "
                    f"{_value(row, others[0])}"
                )
