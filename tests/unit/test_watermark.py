"""The events watermark on its own: slowest partition, idle and drained ones, pausing."""

from services.attribution.watermark import Watermark

S = 1_000_000


def mark(idle: float = 30, lead: float = 0, lateness: int = 0, no_traffic=lambda: None):
    now = [1000.0]
    wm = Watermark(lateness, idle, lead, no_traffic=no_traffic, clock=lambda: now[0])
    return wm, now


def test_the_slowest_partition_holds_it_minus_the_lateness():
    wm, _ = mark(lateness=5 * S)
    wm.saw(0, 100 * S)
    wm.saw(1, 40 * S)
    assert wm.of({0, 1}) == 35 * S
    wm.saw(1, 10 * S)  # an older finish never moves a partition back
    assert wm.latest(1) == 40 * S


def test_a_partition_that_never_delivered_holds_it_until_idle_or_drained():
    wm, now = mark(idle=30)
    wm.saw(0, 100 * S)
    assert wm.of({0, 1}) is None  # partition 1 was just assigned: it may hold older events
    assert wm.of({0, 1}, drained={1}) == 100 * S  # its end marker came: nothing more
    now[0] += 31
    wm.saw(0, 100 * S)
    assert wm.of({0, 1}) == 100 * S  # silent since assigned for longer than idle


def test_an_idle_partition_stops_holding_the_others_back():
    wm, now = mark(idle=30)
    wm.saw(0, 100 * S)
    wm.saw(1, 40 * S)
    now[0] += 31
    wm.saw(0, 100 * S)
    assert wm.of({0, 1}) == 100 * S
    now[0] += 31  # all idle: the furthest one
    assert wm.of({0, 1}) == 100 * S


def test_without_any_traffic_it_is_how_far_the_others_closed():
    wm, now = mark(idle=30, no_traffic=lambda: 7 * S)
    assert wm.of({0}) is None
    now[0] += 31
    assert wm.of({0}) == 7 * S
    assert wm.of(set()) == 7 * S


def test_partitions_running_ahead_are_paused_and_a_paused_one_is_not_idle():
    wm, now = mark(idle=30, lead=60)
    wm.saw(0, 0)
    wm.saw(1, 30 * S)
    assert wm.ahead({0, 1}) == set()
    wm.saw(1, 300 * S)
    assert wm.ahead({0, 1}) == {1}  # never the slowest
    now[0] += 31
    wm.saw(0, 0)
    assert wm.ahead({0, 1}) == {1}  # silent because paused: still active, still paused
    assert wm.of({0, 1}) == 0
    wm.saw(0, 250 * S)
    assert wm.ahead({0, 1}) == set()
    assert mark(lead=0)[0].ahead({0, 1}) == set()


def test_forgotten_partitions_start_afresh():
    wm, _ = mark(idle=30, lead=60)
    wm.saw(0, 0)
    wm.saw(1, 300 * S)
    assert wm.ahead({0, 1}) == {1}
    wm.forget({1})
    assert wm.latest(1) is None
    assert wm.of({0}) == 0
    assert wm.ahead({0}) == set()
