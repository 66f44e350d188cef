"""Review: the completeness audit passes while rated idle buckets are missing from the ledger."""

from __future__ import annotations

from decimal import Decimal

from services.accounting import AccountingSettings, Book, Rate, from_us, to_us
from services.attribution.encode import to_ledger_entry, to_request
from services.attribution.state import save
from services.contracts import GpuRate, InferenceEvent
from services.ledger.audit import run_audit
from services.ledger.completeness import scan_events
from services.ledger.db import counted_set, entry_row, make_engine, write_batch
from services.ledger.writer import Batch

S = 1_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def test_review_audit_notices_lost_idle_buckets_after_the_last_traffic(db_url: str) -> None:
    """A node rented for ten minutes ([T0, T0+10 min), a finite rate) serves one request in its
    first minute. ``--until-idle`` closes its ten buckets (Book.flush closes up to the rate's
    end): 0.60 USD each. If the ledger keeps only the first three (seven idle buckets, 4.20 USD,
    lost on the way), the audit must fail (it passed when it expected rated buckets only up to
    the latest bucket with tenant traffic; now up to what attribution says it closed)."""
    cfg = AccountingSettings(allowed_lateness_seconds=0)
    rate = GpuRate(
        resource_id="node-1",
        price_per_hour=Decimal("36"),
        currency="USD",
        effective_from=from_us(T0),
        effective_to=from_us(T0 + 600 * S),
    )
    event = InferenceEvent(
        event_id="e1",
        tenant_id="acme",
        resource_id="node-1",
        model="m",
        engine="vllm",
        started_at=from_us(T0 + 5 * S),
        finished_at=from_us(T0 + 25 * S),
        prompt_tokens=100,
        completion_tokens=10,
        status="ok",
    )
    book = Book(cfg)
    book.add_rate(Rate("node-1", to_us(rate.effective_from), T0 + 600 * S, Decimal("36"), "USD"))
    book.add_request(to_request(event))
    closed = book.flush()
    assert len(closed) == 10  # what an undisturbed --until-idle run writes

    kept = closed[:3]  # seven trailing idle buckets lost
    batch = Batch(
        entries=[entry_row(to_ledger_entry(e)) for c in kept for e in c.entries],
        rates=[rate],
        counted=[
            counted_set(c.resource_id, from_us(c.bucket_start_us), c.counted)
            for c in kept
            if c.counted
        ],
    )
    engine = make_engine(db_url)
    write_batch(engine, "g", batch)
    # what the attribution processor stores with its state: how far it has closed buckets
    save(engine, [], None, ("worker-1", from_us(book.closed_through() or 0)))
    topic = scan_events(
        [("inference-events", 0, 0, b"node-1", event.model_dump_json().encode())], []
    )
    checks = run_audit(engine, cfg, ["usage"], topic)
    failed = [c.name for c in checks if not c.ok]
    assert failed, (
        "audit passed with 7 of 10 rated buckets (4.20 of 6.00 USD) missing: "
        + "; ".join(f"{c.name}: {c.detail}" for c in checks)
    )
