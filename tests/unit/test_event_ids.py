"""Defect 7 of issue 13: an event id is unique wherever its buckets lie (DESIGN.md section 2)."""

from __future__ import annotations

import json
from decimal import Decimal

from services.accounting import AccountingSettings, Added, Book
from services.accounting.seen import SeenIndex, content_digest, event_key, pack
from tests.unit.test_accounting import CFG, RATE, T0, WORKED, S, req


def total(closed):
    return sum(e.amount for c in closed for e in c.entries if e.tenant_id is not None)


def counted(closed):
    return sorted(x for c in closed for x in c.counted)


def test_a_reused_id_with_other_times_is_a_conflict_and_counted_once():
    book = Book(CFG)
    book.add_rate(RATE)
    assert book.add_request(WORKED[0])[0] is Added.ACCEPTED
    moved = WORKED[0]._replace(start_us=T0 + 600 * S, end_us=T0 + 620 * S)  # other buckets
    assert book.add_request(moved) == (Added.CONFLICT, [])
    out = book.flush()
    assert counted(out) == [("r1", "ok")]
    busy = {c.bucket_start_us for c in out for e in c.entries if e.tenant_id}
    assert busy == {T0}


def test_a_conflict_is_found_after_its_first_copys_bucket_closed_and_was_evicted():
    stored: dict[tuple[str, int], dict] = {}
    book = Book(CFG, lambda r, starts: {b: stored[r, b] for b in starts if (r, b) in stored})
    book.add_rate(RATE)
    book.add_request(WORKED[0])
    book.add_request(req("later", "acme", "m", 900, 901, 1, 0, 1))
    book.advance()
    for resource_id, kind, key, data in book.take_dirty():
        if kind == "bucket":
            stored[resource_id, int(key)] = json.loads(json.dumps(data))
    book.advance()  # evicts what was exported
    assert T0 not in book._resources["node-1"].closed  # noqa: SLF001
    other = WORKED[0]._replace(start_us=T0 + 880 * S, end_us=T0 + 890 * S)
    assert book.add_request(other)[0] is Added.CONFLICT
    assert book.add_request(WORKED[0])[0] is Added.DUPLICATE


def test_every_kind_of_other_content_is_a_conflict_and_an_identical_copy_a_duplicate():
    r = WORKED[0]
    variants = [
        r._replace(end_us=r.end_us + 1),
        r._replace(prompt_tokens=r.prompt_tokens + 1),
        r._replace(completion_tokens=0),
        r._replace(cached_prompt_tokens=1),
        r._replace(tenant_id="other"),
        r._replace(model="other"),
        r._replace(status="error"),
        r._replace(gpu_count=2),
        r._replace(resource_id="node-2"),  # the same id on another resource of this Book
    ]
    book = Book(CFG)
    book.add_request(r)
    for v in variants:
        assert book.add_request(v) == (Added.CONFLICT, []), v
    assert book.add_request(r) == (Added.DUPLICATE, [])


def test_a_copy_read_again_after_a_restart_completes_the_buckets_that_were_open():
    """r3 spans [50, 70): its first bucket closed and was stored, its second was open when
    the process stopped. Read again, it must fill the second bucket (counted there once),
    not be dropped as a duplicate of the first."""
    on_time = Book(CFG)
    on_time.add_rate(RATE)
    for r in WORKED:
        on_time.add_request(r)
    expected = on_time.flush()

    book = Book(CFG)
    book.add_rate(RATE)
    for r in WORKED:
        book.add_request(r)
    book.add_request(req("x", "beta", "m", 61, 61, 0, 0, 0))
    first = book.advance(T0 + 60 * S)
    restarted = Book(CFG)
    for item in book.take_dirty():
        restarted.restore(*json.loads(json.dumps(item)))
    for r in WORKED:
        status, _ = restarted.add_request(r)
        assert status is (Added.ACCEPTED if r.event_id == "r3" else Added.DUPLICATE)
    restarted.add_request(req("x", "beta", "m", 61, 61, 0, 0, 0))
    rest = restarted.flush()
    assert counted(first + rest) == sorted([*counted(expected), ("x", "ok")])
    assert total(first + rest) == total(expected)
    assert restarted.add_request(WORKED[2]) == (Added.DUPLICATE, [])


def test_after_a_restart_a_conflict_is_found_through_the_remembered_ids():
    book = Book(CFG)
    book.add_rate(RATE)
    book.add_request(WORKED[0])
    book.advance(T0 + 120 * S)
    items = [json.loads(json.dumps(i)) for i in book.take_dirty()]
    restarted = Book(CFG)
    for resource_id, kind, key, data in items:
        if kind == "bucket":
            restarted.remember(resource_id, key, data)  # indexed, not kept in memory
        else:
            restarted.restore(resource_id, kind, key, data)
    assert restarted.resident_buckets == 0
    moved = WORKED[0]._replace(start_us=T0 + 300 * S, end_us=T0 + 310 * S)
    assert restarted.add_request(moved) == (Added.CONFLICT, [])


def test_buckets_stored_without_digests_still_find_duplicates_and_conflicts():
    book = Book(CFG)
    book.add_rate(RATE)
    book.add_request(WORKED[0])
    book.advance(T0 + 60 * S)
    restarted = Book(CFG)
    for resource_id, kind, key, data in book.take_dirty():
        if kind == "bucket":
            del data["facts"]["digests"]  # as stored before this change
        restarted.restore(resource_id, kind, key, data)
    assert restarted.add_request(WORKED[0]) == (Added.DUPLICATE, [])
    moved = WORKED[0]._replace(start_us=T0 + 300 * S, end_us=T0 + 310 * S)
    assert restarted.add_request(moved) == (Added.CONFLICT, [])


def test_ids_are_forgotten_behind_the_late_horizon_and_memory_stays_bounded():
    cfg = AccountingSettings(late_horizon_seconds=600, billing_horizon_seconds=600)
    book = Book(cfg)
    for i in range(20_000):
        t = i * 3  # 60,000 s of traffic, 20 events a minute
        book.add_request(req(f"e{i}", "acme", "m", t, t + 1, 1, 0, 1))
        if i % 100 == 0:
            book.advance()
    book._seen.rebuild()  # noqa: SLF001
    live = len(book._seen)  # noqa: SLF001
    assert live <= 20 * (600 + 120 + 180) // 60 + 40  # the late horizon's worth, not 20,000
    # an id forgotten with its final buckets is refused as too late where it was
    assert book.add_request(req("e0", "acme", "m", 0, 1, 1, 0, 1))[0] is Added.TOO_LATE


def test_a_forgotten_resources_unsaved_ids_are_not_duplicates_when_it_comes_back():
    book = Book(CFG)
    book.add_request(WORKED[0])
    book.forget(["node-1"])
    assert book.add_request(WORKED[0])[0] is Added.ACCEPTED


def test_the_index_survives_growth_deletion_and_expiry():
    seen = SeenIndex(8)
    for i in range(5000):
        seen.put(event_key(f"id{i}"), pack(i, 7))
    assert all(seen.get(event_key(f"id{i}")) == pack(i, 7) for i in range(5000))
    seen.discard(event_key("id3"))
    assert seen.get(event_key("id3")) is None
    seen.expire_before = 4000
    seen.rebuild()
    assert len(seen) == 1000 and seen.get(event_key("id4000")) == pack(4000, 7)
    assert seen.get(event_key("id3999")) is None
    assert pack(10**12, 5) >> 32 == 2**31 - 1  # far-future times are clamped


def test_content_digest_is_deterministic_and_handles_huge_counts():
    r = WORKED[0]
    assert content_digest(r) == content_digest(r._replace(event_id="other id"))
    assert content_digest(r._replace(completion_tokens=10**30)) > 0


def test_a_conflict_changes_no_amount():
    book = Book(CFG)
    book.add_rate(RATE)
    for r in WORKED:
        book.add_request(r)
    book.add_request(WORKED[1]._replace(tenant_id="mallory"))
    out = book.flush()
    assert {e.tenant_id for c in out for e in c.entries} == {"acme", "beta", None}
    assert sum(e.amount for c in out for e in c.entries) == Decimal("1.20")
