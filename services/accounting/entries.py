"""Ledger entries of a bucket: deterministic ids, first closing, adjustments, allocation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from decimal import Decimal

from services.accounting.buckets import request_buckets, request_work_nanos
from services.accounting.facts import BucketFacts
from services.accounting.model import AccountingSettings, Bill, Entry, Rate, Request
from services.accounting.pricing import BucketCost, bucket_cost
from services.accounting.shares import Position, PositionKey, positions
from services.accounting.slo import slo_class


def entry_id(*parts: object) -> str:
    """A deterministic id: the same decision always gets the same id (idempotent writes)."""
    text = "v1\x1f" + "\x1f".join(["" if p is None else str(p) for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def entry_order(key: PositionKey) -> tuple[bool, str, str, str]:
    """Entries of a bucket in a fixed order: usage by tenant, model and currency, idle last."""
    tenant, model, currency = key
    return (tenant is None, tenant or "", model or "", currency)


def make_entry(
    resource_id: str,
    bucket_start_us: int,
    settings: AccountingSettings,
    key: PositionKey,
    pos: Position,
    kind: str,
    basis: str,
    trigger: str | None = None,
    line_ids: tuple[str, ...] = (),
) -> Entry:
    tenant, model, currency = key
    if kind in ("usage", "idle"):
        eid = entry_id(
            resource_id,
            bucket_start_us,
            settings.bucket_seconds,
            kind,
            basis,
            currency,
            tenant,
            model,
        )
    else:
        eid = entry_id(
            resource_id,
            bucket_start_us,
            settings.bucket_seconds,
            kind,
            currency,
            tenant,
            model,
            trigger,
        )
    return Entry(
        entry_id=eid,
        entry_kind=kind,
        cost_basis=basis,
        tenant_id=tenant,
        model=model,
        resource_id=resource_id,
        bucket_start_us=bucket_start_us,
        bucket_seconds=settings.bucket_seconds,
        amount=pos.amount,
        currency=currency,
        completions=pos.completions,
        failed_requests=pos.failed,
        prompt_tokens=pos.prompt,
        cached_prompt_tokens=pos.cached,
        completion_tokens=pos.completion,
        work_units=pos.work,
        busy_seconds=pos.busy,
        billing_line_ids=line_ids,
        completions_within_slo=pos.within,
        cancelled_requests=pos.cancelled,
        slo_miss_amount=pos.slo_miss_amount,
        failed_amount=pos.failed_amount,
        cancelled_amount=pos.cancelled_amount,
    )


def initial_entries(
    resource_id: str,
    bucket_start_us: int,
    settings: AccountingSettings,
    pos: dict[PositionKey, Position],
    cost: BucketCost,
) -> list[Entry]:
    """The entries of a bucket closing for the first time: usage per (tenant, model), idle."""
    return [
        make_entry(
            resource_id,
            bucket_start_us,
            settings,
            key,
            p,
            "idle" if key[0] is None else "usage",
            cost.basis,
            line_ids=cost.line_ids,
        )
        for key, p in sorted(pos.items(), key=lambda kv: entry_order(kv[0]))
    ]


def adjustment_entries(
    resource_id: str,
    bucket_start_us: int,
    settings: AccountingSettings,
    old: dict[PositionKey, Position],
    new: dict[PositionKey, Position],
    kind: str,
    cost: BucketCost,
    trigger: str,
) -> list[Entry]:
    """Entries that take the ledger of a closed bucket from ``old`` to ``new`` (DESIGN step 7)."""
    entries = []
    for key in sorted(set(old) | set(new), key=entry_order):
        delta = new.get(key, Position()).minus(old.get(key, Position()))
        if not delta.is_zero():
            entries.append(
                make_entry(
                    resource_id,
                    bucket_start_us,
                    settings,
                    key,
                    delta,
                    kind,
                    cost.basis,
                    trigger,
                    cost.line_ids,
                )
            )
    return entries


def allocate_bucket(
    resource_id: str,
    bucket_start_us: int,
    requests: Iterable[Request],
    rates: Sequence[Rate],
    settings: AccountingSettings,
    bills: Iterable[Bill] = (),
) -> list[Entry]:
    """All entries of one bucket closing with the given requests, rates and bills."""
    facts = BucketFacts(bucket_start_us)
    for req in requests:
        if req.resource_id == resource_id and bucket_start_us in request_buckets(
            req, settings.bucket_us
        ):
            facts.add(
                req, request_work_nanos(req, settings), settings.bucket_us, slo_class(settings, req)
            )
    b0 = bucket_start_us
    cost = bucket_cost(rates, bills, b0, b0 + settings.bucket_us, settings.default_currency)
    return initial_entries(resource_id, b0, settings, positions(facts, cost, settings), cost)


def bucket_total(entries: Iterable[Entry]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[e.currency] = totals.get(e.currency, Decimal(0)) + e.amount
    return totals
