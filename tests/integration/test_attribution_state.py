"""Closed buckets leave memory and come back from Postgres when a late event touches them."""

from __future__ import annotations

from decimal import Decimal

from services.accounting import AccountingSettings, Added, Book, Rate, Request
from services.attribution import state
from services.ledger.db import make_engine

S = 1_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def request(event_id: str, minute: int, tenant: str = "a") -> Request:
    start = T0 + minute * 60 * S + 5 * S
    return Request(event_id, tenant, "m", "node-1", start, start + 20 * S, 100, 0, 50, "ok")


def test_state_restores_the_recent_window_and_loads_older_buckets_on_demand(db_url: str) -> None:
    engine = make_engine(db_url)
    cfg = AccountingSettings(allowed_lateness_seconds=0, resident_seconds=300)
    rate = Rate("node-1", T0, None, Decimal("36"), "USD")
    loader = lambda r, starts: state.load_buckets(engine, r, starts)  # noqa: E731
    book = Book(cfg, loader)
    reference = Book(cfg)  # keeps everything in memory
    for b in (book, reference):
        b.add_rate(rate)
    for minute in range(60):
        for b in (book, reference):
            b.add_request(request(f"e{minute}", minute))
            b.advance()
        state.save(engine, book.take_dirty())
    assert book.resident_buckets <= 7

    restarted = Book(cfg, loader)
    state.load(engine, restarted)
    restarted.add_request(request("e59", 59))  # open at the "crash": Kafka replays its message
    assert 1 <= restarted.resident_buckets <= 7  # not the 60 buckets in Postgres

    late = request("late", 10, tenant="b")
    expected = reference.add_request(late)
    got = restarted.add_request(late)
    assert got[0] is Added.LATE
    assert got == expected
    assert restarted.add_request(request("e12", 12)) == (Added.DUPLICATE, [])
    for b in (restarted, reference):
        b.add_request(request("e60", 60))
    assert restarted.advance() == reference.advance()
