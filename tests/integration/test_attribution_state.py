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
    state.load_resources(engine, restarted, ["node-1"])  # its first message after the restart
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


def test_load_resources_restores_only_the_resources_asked_for(db_url: str) -> None:
    """A worker that comes to own some resources (a rebalance) restores just those: their
    rates, their latest closed bucket and those within resident_seconds of it."""
    engine = make_engine(db_url)
    cfg = AccountingSettings(allowed_lateness_seconds=0, resident_seconds=120)
    book = Book(cfg, lambda r, starts: state.load_buckets(engine, r, starts))
    for node in ("node-1", "node-2"):
        book.add_rate(Rate(node, T0, None, Decimal("36"), "USD"))
    for minute in range(10):
        for node in ("node-1", "node-2"):
            req = request(f"{node}-{minute}", minute)
            book.add_request(req._replace(resource_id=node))
        book.advance()
        state.save(engine, book.take_dirty())

    taken_over = Book(cfg, lambda r, starts: state.load_buckets(engine, r, starts))
    restored = state.load_resources(engine, taken_over, ["node-2"])
    assert taken_over.resources() == ["node-2"]
    assert restored == 1 + 2  # the rate, the latest closed bucket (minute 8) and minute 7
    assert taken_over.resident_buckets == 2
    old = request("node-2-1", 1)._replace(resource_id="node-2")
    assert taken_over.add_request(old) == (Added.DUPLICATE, [])  # loaded back on demand
    assert state.load_resources(engine, Book(cfg), []) == 0
