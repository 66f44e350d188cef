"""The stored form of a closed bucket's facts: format 2 reads back to the same facts, and state
stored in the first format (absolute interval pairs, work as decimal text) still reads."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.accounting import Request
from services.accounting.facts import (
    BucketFacts,
    from_nanos,
    pack_intervals,
    unpack_intervals,
)

S = 1_000_000
W = 60 * S
T0 = 1_704_067_200 * S


def first_format(f: BucketFacts) -> dict[str, Any]:
    """The facts as the first format stored them (before format 2)."""
    return {
        "start": f.start_us,
        "busy": [list(iv) for iv in f.busy],
        "events": sorted(f.event_ids),
        "finished": sorted(f.finished.items()),
        "groups": [
            [
                t,
                m,
                str(from_nanos(g.work)),
                [list(iv) for iv in g.intervals],
                g.completions,
                g.failed,
                g.prompt,
                g.cached,
                g.completion,
                g.within,
                g.cancelled,
                [str(from_nanos(w)) for w in g.class_work],
                g.class_time,
            ]
            for (t, m), g in sorted(f.groups.items())
        ],
    }


def same(a: BucketFacts, b: BucketFacts) -> None:
    assert (a.start_us, a.busy, a.event_ids, a.finished) == (b.start_us, b.busy, b.event_ids,
                                                            b.finished)  # fmt: skip
    assert a.groups.keys() == b.groups.keys()
    for k in a.groups:
        assert vars(a.groups[k]) == vars(b.groups[k])


requests = st.lists(
    st.tuples(
        st.integers(-W // 2, W + W // 2),  # start, from the bucket's start
        st.integers(0, W),  # length
        st.sampled_from(("t1", "t2")),
        st.sampled_from(("ok", "error", "cancelled")),
        st.integers(0, 3),  # request class
        st.integers(0, 10**15),  # work, nano units
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(requests, st.booleans())
def test_both_formats_read_back_to_the_same_facts(reqs: list[Any], huge: bool) -> None:
    f = BucketFacts(T0)
    for i, (start, n, tenant, status, cls, work) in enumerate(reqs):
        r = Request(f"e{i}", tenant, "m", "n1", T0 + start, T0 + start + n, 10, 0, 5, status)
        f.add(r, work * (10**6 if huge else 1), W, cls)  # huge: work beyond 64 bits
    data = f.to_data()
    assert "groups2" in data and "groups" not in data  # (an older reader fails loudly)
    same(BucketFacts.from_data(json.loads(json.dumps(data))), f)
    same(BucketFacts.from_data(json.loads(json.dumps(first_format(f)))), f)
    if f.busy and not huge:  # smaller, but for the version mark of a bucket without traffic
        assert len(json.dumps(data)) < len(json.dumps(first_format(f)))


def test_intervals_pack_to_small_differences_and_back() -> None:
    ivs = [(T0, T0 + 5), (T0 + 9, T0 + W)]
    assert pack_intervals(ivs, T0) == [0, 5, 4, W - 9]
    assert unpack_intervals(pack_intervals(ivs, T0), T0) == ivs
    assert unpack_intervals([], T0) == []


def test_a_group_with_work_outside_the_first_class_keeps_every_class() -> None:
    f = BucketFacts(T0)
    f.add(Request("a", "t", "m", "n1", T0, T0 + S, 10, 0, 5, "ok"), 7, W, 0)
    f.add(Request("b", "t", "m", "n1", T0 + S, T0 + 2 * S, 10, 0, 5, "error"), 3, W, 2)
    group = f.to_data()["groups2"][0]
    assert group[2] == 10 and group[11] == [7, 0, 3, 0] and group[12] == [S, 0, S, 0]
    g = BucketFacts.from_data(f.to_data()).groups[("t", "m")]
    assert (g.work, g.class_work, g.class_time) == (10, [7, 0, 3, 0], [S, 0, S, 0])
    assert from_nanos(g.work) == Decimal("1E-8")
