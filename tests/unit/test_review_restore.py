"""Review: state restored after a restart must lead to the same ledger as an undisturbed run."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from services.accounting import AccountingSettings, Book, Rate, to_us
from services.attribution.encode import to_request
from services.contracts import InferenceEvent
from tests.helpers import FAULT_EPOCH

T0 = datetime.fromisoformat(FAULT_EPOCH)


def event(eid: str, resource: str, start_s: int, seconds: int) -> InferenceEvent:
    return InferenceEvent(
        event_id=eid,
        tenant_id="t",
        resource_id=resource,
        model="m",
        engine="vllm",
        started_at=T0 + timedelta(seconds=start_s),
        finished_at=T0 + timedelta(seconds=start_s + seconds),
        prompt_tokens=10,
        completion_tokens=5,
        status="ok",
    )


def spare_rate() -> Rate:
    return Rate("spare", to_us(T0), None, Decimal("36"), "USD")


def test_review_rate_stored_before_any_bucket_closed_still_closes_idle_buckets_after_restart():
    """A rate is read and stored (take_dirty: ``attribution_state`` kind ``rate``) before the
    watermark closes any of its resource's buckets; the processor is then killed. At restart
    ``_own`` restores the rate (``Book.restore`` appends it, but leaves ``next_open_us`` unset),
    and the rates topic, read again from the start, hands the same rate to ``add_rate``, which
    returns at once (``rate in res.rates``). The resource has no open position from which to
    close buckets: its idle cost is never decided, not even by ``--until-idle``'s flush."""
    settings = AccountingSettings(allowed_lateness_seconds=0)

    def run(book: Book) -> list[int]:
        book.add_rate(spare_rate())  # the rates topic, read from the start
        book.add_request(to_request(event("busy", "node", 0, 10)))  # another node's traffic
        book.add_request(to_request(event("later", "node", 290, 10)))  # watermark 300 s
        return sorted(c.bucket_start_us for c in book.advance() if c.resource_id == "spare")

    undisturbed = run(Book(settings))
    assert len(undisturbed) == 5  # idle buckets 0..4 of the spare node

    before = Book(settings)
    before.add_rate(spare_rate())
    stored = before.take_dirty()  # the rate, stored with the step's state
    assert [kind for _, kind, _, _ in stored] == ["rate"]
    after = Book(settings)  # kill -9, restart: _own restores what storage holds
    for item in stored:
        after.restore(*item)
    assert run(after) == undisturbed, "the spare node's idle buckets never close after restart"
