"""``inferledger top`` without I/O: /metrics pages parsed, rates from two scrapes (a counter
reset, a new series, an endpoint down), dead letters since start, lag and watermark ages, and
the screen rendered from a snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.cli.topview import Snapshot, duration, render_text
from services.ledger.recent import RecentSpend
from services.runtime.config import component_listens
from services.runtime.scrape import (
    EVENTS_IN,
    Page,
    Tracker,
    increase,
    listen_urls,
    metrics_url,
    parse,
    rate,
)

T0 = 1_800_000_000.0  # wall clock of the first scrape


def attribution(accepted: float, dead: float = 0, closed: float = 2, lag: float = 3) -> str:
    return f"""\
# TYPE inferledger_processed_total counter
inferledger_processed_total{{component="attribution",counter="events.accepted"}} {accepted}
inferledger_processed_total{{component="attribution",counter="events.duplicate"}} 7
# TYPE inferledger_dead_letters_total counter
inferledger_dead_letters_total{{component="attribution",reason="invalid_json"}} {dead}
# TYPE inferledger_buckets_closed_total counter
inferledger_buckets_closed_total{{component="attribution",decision="close"}} {closed}
inferledger_buckets_closed_total{{component="attribution",decision="adjustment"}} 1
# TYPE inferledger_consumer_lag_messages gauge
inferledger_consumer_lag_messages{{component="attribution",topic="ev",partition="0"}} {lag}
inferledger_consumer_lag_messages{{component="attribution",topic="ev",partition="1"}} 4
inferledger_consumer_lag_messages{{topic="x-__assignor-__leader",partition="0"}} 9
# TYPE inferledger_watermark_seconds gauge
inferledger_watermark_seconds{{component="attribution",topic="ev",partition="0"}} {T0 - 30}
inferledger_watermark_seconds{{component="attribution",topic="ev",partition="1"}} {T0 - 7200}
# TYPE inferledger_closed_through_seconds gauge
inferledger_closed_through_seconds{{component="attribution"}} {T0 - 600}
# TYPE inferledger_healthy gauge
inferledger_healthy{{component="attribution"}} 1
# TYPE inferledger_dependency_up gauge
inferledger_dependency_up{{component="attribution",dependency="kafka"}} 1
inferledger_dependency_up{{component="attribution",dependency="postgres"}} 0
"""


def ledger(written: float) -> str:
    return f"""\
# TYPE inferledger_ledger_entries_written_total counter
inferledger_ledger_entries_written_total{{component="ledger"}} {written}
# TYPE inferledger_healthy gauge
inferledger_healthy{{component="ledger"}} 1
"""


A, L, X = "http://a/metrics", "http://l/metrics", "http://x/metrics"


def test_a_page_is_parsed_with_its_labels_and_component() -> None:
    page = parse(A, T0, attribution(100))
    assert page.up and page.component == "attribution"
    assert page.total(*EVENTS_IN[:1], **EVENTS_IN[1]) == 100
    assert page.total("inferledger_consumer_lag_messages", topic="ev") == 7
    assert page.total("inferledger_nothing") is None


def test_a_rate_is_the_increase_over_the_wall_time_between_two_scrapes() -> None:
    before = [parse(A, T0, attribution(100)), parse(L, T0, ledger(10))]
    after = [parse(A, T0 + 2, attribution(160)), parse(L, T0 + 2, ledger(50))]
    assert rate(before, after, *EVENTS_IN) == 30
    assert rate(before, after, "inferledger_ledger_entries_written_total") == 20
    assert rate(after, after, *EVENTS_IN) is None  # no time between them
    assert rate([], after, *EVENTS_IN) is None  # one scrape: no rate yet


def test_a_counter_that_went_down_was_reset_and_counts_from_zero() -> None:
    assert increase(100, 160) == 60
    assert increase(100, 40) == 40  # restarted, then counted 40
    assert increase(None, 5) == 5  # a new series starts at 0
    before = [parse(A, T0, attribution(1000))]
    after = [parse(A, T0 + 4, attribution(20))]
    assert rate(before, after, *EVENTS_IN) == 5


def test_an_endpoint_down_in_either_scrape_adds_nothing_to_a_rate() -> None:
    before = [parse(A, T0, attribution(100)), Page(L, T0, error="refused")]
    after = [parse(A, T0 + 1, attribution(110)), parse(L, T0 + 1, ledger(50))]
    assert rate(before, after, *EVENTS_IN) == 10
    assert rate(before, after, "inferledger_ledger_entries_written_total") is None


def test_the_tracker_gives_rates_lag_watermarks_health_and_dead_letters_since_start() -> None:
    tracker = Tracker()
    first = tracker.update(
        [parse(A, T0, attribution(100, dead=5)), parse(L, T0, ledger(10)), Page(X, T0, error="x")]
    )
    assert first.events_per_s is None and first.events_total == 100
    assert [(d.reason, d.total, d.since_start) for d in first.dead_letters] == [
        ("invalid_json", 5, 0)
    ]
    second = tracker.update(
        [parse(A, T0 + 1, attribution(140, dead=8)), parse(L, T0 + 1, ledger(30))]
    )
    assert (second.events_per_s, second.entries_per_s) == (40, 20)
    assert second.closed_per_s == 0 and second.closed_total == 2
    assert second.dead_letters[0].since_start == 3
    # the attribution processor restarts: its counters start from 0 again
    third = tracker.update(
        [parse(A, T0 + 2, attribution(10, dead=1)), parse(L, T0 + 2, ledger(31))]
    )
    assert third.events_per_s == 10
    assert third.dead_letters[0].total == 1 and third.dead_letters[0].since_start == 4
    assert third.lag == (("attribution", "ev", 7.0),)
    assert dict(((t, p), age) for t, p, age in third.watermark_ages) == {
        ("ev", "0"): 32,
        ("ev", "1"): 7202,
    }
    assert third.oldest_watermark_age == 7202
    assert third.closed_through_age == 602
    health = {e.component: (e.error, e.healthy, e.dependencies) for e in first.endpoints}
    assert health["attribution"] == (None, True, (("kafka", True), ("postgres", False)))
    assert health[None] == ("x", None, ())


def test_metrics_urls_from_options_and_listen_addresses() -> None:
    assert metrics_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert metrics_url("http://h:1") == "http://h:1/metrics"
    assert metrics_url("https://h:1/m") == "https://h:1/m"
    assert component_listens("0.0.0.0:9000", ("a", "b")) == {
        "a": "0.0.0.0:9000",
        "b": "0.0.0.0:9001",
    }
    assert listen_urls("0.0.0.0:9000", ("a", "b")) == {
        "a": "http://127.0.0.1:9000/metrics",
        "b": "http://127.0.0.1:9001/metrics",
    }


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(45, "45 s"), (600, "10 min"), (18000, "5.0 h"), (86400 * 10, "10 d"), (-5, "-5 s")],
)
def test_durations_read_easily(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
    assert duration(3 * 365.25 * 86400) == "3.0 y"


def _snapshot(spend: RecentSpend | None = None, error: str | None = None) -> Snapshot:
    tracker = Tracker()
    tracker.update([parse(A, T0, attribution(100, dead=2)), parse(L, T0, ledger(10))])
    view = tracker.update(
        [
            parse(A, T0 + 1, attribution(112, dead=3)),
            parse(L, T0 + 1, ledger(17)),
            Page(X, T0 + 1, error="[Errno 111] Connection refused"),
        ]
    )
    return Snapshot(view, spend, error, "--metrics", 1.0, {X: "alerts"})


def test_the_screen_shows_processors_flow_lag_watermarks_dead_letters_and_spend() -> None:
    end = datetime(2024, 1, 1, 0, 2, tzinfo=UTC)
    spend = RecentSpend(
        datetime(2023, 12, 31, 23, 2, tzinfo=UTC),
        end,
        [
            ("acme", "USD", Decimal("0.416602316602")),
            ("beta", "USD", Decimal("0.083397683398")),
            (None, "USD", Decimal("0.700000000000")),
            ("acme", "JPY", Decimal("411.5")),
        ],
    )
    out = render_text(_snapshot(spend))
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert any(
        "attribution http://a/metrics up healthy kafka up, postgres DOWN" in x for x in lines
    )
    assert any("ledger http://l/metrics up healthy" in x for x in lines)
    assert any("alerts http://x/metrics down ([Errno 111] Connection refused)" in x for x in lines)
    assert "events in (accepted) 12.0/s 112" in lines
    assert "ledger entries out (written) 7.0/s 17" in lines
    assert "buckets closed 0.0/s 2" in lines
    assert "attribution ev 7" in lines
    assert any("oldest 2.0 h; buckets closed through 10 min ago" in x for x in lines)
    assert "ev 1 2.0 h" in lines and "ev 0 31 s" in lines
    assert "attribution invalid_json 3 +1" in lines
    assert "buckets from 2023-12-31 23:02:00 to 2024-01-01 00:02:00 UTC" in lines
    assert any("the hour ending at the ledger's latest bucket end, 3.0 y ago" in x for x in lines)
    assert "acme USD 0.42" in lines and "beta USD 0.08" in lines and "idle USD 0.70" in lines
    assert "acme JPY 412" in lines  # the currency's minor unit
    assert "total USD 1.20" in lines and "total JPY 412" in lines


def test_the_screen_says_why_there_is_no_spend_and_when_there_is_nothing_to_watch() -> None:
    assert "spend of the last hour: the ledger is empty" in render_text(_snapshot(RecentSpend()))
    out = render_text(_snapshot(error="cannot read the ledger: connection refused"))
    assert "spend of the last hour: cannot read the ledger: connection refused" in out
    view = Tracker().update([])
    out = render_text(Snapshot(view, None, "x"))
    assert "no processors to watch: give --metrics URL, start `inferledger up`" in out
    assert "events in (accepted) - -" in [" ".join(x.split()) for x in out.splitlines()]


def test_top_finds_the_processors_of_a_running_up_then_the_listen_address(tmp_path) -> None:
    import json
    import os

    from services.cli.top import endpoints
    from services.runtime.config import Settings

    settings = Settings(data_dir=tmp_path, metrics_listen="127.0.0.1:9100")
    assert endpoints(settings, ["h:1"]) == ({"http://h:1/metrics": ""}, "--metrics")
    urls, source = endpoints(settings, [])
    assert source == "INFERLEDGER_METRICS_LISTEN"
    assert urls == {
        "http://127.0.0.1:9100/metrics": "attribution",
        "http://127.0.0.1:9101/metrics": "ledger",
        "http://127.0.0.1:9102/metrics": "alerts",
    }
    metrics = {"attribution": "http://127.0.0.1:5/metrics", "ledger": "http://127.0.0.1:6/metrics"}
    state = {"pid": os.getpid(), "kafka_bootstrap": "b:1", "database_url": "", "metrics": metrics}
    (tmp_path / "stack.json").write_text(json.dumps(state))
    urls, source = endpoints(settings, [])
    assert source == "`inferledger up` (stack.json)"
    assert urls == {u: c for c, u in metrics.items()}
    assert endpoints(Settings(data_dir=tmp_path / "none"), []) == ({}, "")
