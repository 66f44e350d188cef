"""The processors' ``/metrics`` pages as ``inferledger top`` reads them: scraped over HTTP and
parsed with prometheus_client's parser (:func:`scrape`), then turned into the pipeline's figures
by :class:`Tracker` (pure: pages in, a :class:`PipelineView` out, no I/O).

Rates come from two successive scrapes of the same endpoint: a counter's increase divided by the
wall time between them. A counter that went down was reset (its process restarted), so its
increase is its new value, as Prometheus' ``rate()`` counts it; a series that a page has and the
previous page had not (a counter's first count) starts at 0. An endpoint down in either scrape
adds nothing to a rate.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from services.runtime.config import component_listens

#: (sample name, sorted label pairs) -> value
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

#: a counter: its sample name and the labels that pick its series
CounterSpec = tuple[str, Mapping[str, str]]
EVENTS_IN: CounterSpec = ("inferledger_processed_total", {"counter": "events.accepted"})
ENTRIES_OUT: CounterSpec = ("inferledger_ledger_entries_written_total", {})
BUCKETS_CLOSED: CounterSpec = ("inferledger_buckets_closed_total", {"decision": "close"})
DEAD_LETTERS = "inferledger_dead_letters_total"
LAG = "inferledger_consumer_lag_messages"
WATERMARK = "inferledger_watermark_seconds"
CLOSED_THROUGH = "inferledger_closed_through_seconds"
HEALTHY = "inferledger_healthy"
DEPENDENCY_UP = "inferledger_dependency_up"
INTERNAL = "__assignor-__leader"
"""faust's own topic (one per consumer group), left out of the lag shown."""


@dataclass(frozen=True)
class Page:
    """One scrape of one endpoint: its samples, or why there are none (``error``)."""

    url: str
    at: float  # wall clock (Unix seconds) of the scrape
    samples: Mapping[SeriesKey, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples named ``name`` whose labels include ``labels``: (labels, value)."""
        out = []
        for (n, pairs), value in self.samples.items():
            if n != name:
                continue
            have = dict(pairs)
            if all(have.get(k) == v for k, v in labels.items()):
                out.append((have, value))
        return sorted(out, key=lambda lv: sorted(lv[0].items()))

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of those samples, None when there are none."""
        found = self.series(name, **labels)
        return sum(v for _, v in found) if found else None

    @property
    def component(self) -> str | None:
        """The processor behind the page (``inferledger_healthy``'s label), if it says."""
        for labels, _ in self.series(HEALTHY):
            if "component" in labels:
                return labels["component"]
        return None


def parse(url: str, at: float, body: str) -> Page:
    """A page from the Prometheus text format."""
    samples: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return Page(url, at, samples)


def metrics_url(value: str) -> str:
    """``host:port``, ``http://host:port`` or a full URL: the URL of its /metrics page."""
    url = value if "://" in value else f"http://{value}"
    scheme, _, rest = url.partition("://")
    if "/" not in rest:
        url = f"{scheme}://{rest}/metrics"
    return url


def listen_urls(listen: str, components: Sequence[str]) -> dict[str, str]:
    """The /metrics URLs of processors started on ``listen`` one port each, in order (as
    ``run all`` and ``up`` do); a wildcard host is reached on the loopback."""
    out = {}
    for component, each in component_listens(listen, components).items():
        host, _, port = each.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 (not a bind: where to reach it)
            host = "127.0.0.1"
        out[component] = f"http://{host}:{port}/metrics"
    return out


def scrape_one(url: str, timeout: float = 2.0) -> Page:
    """One endpoint's page; an unreachable or failing endpoint is a page with its error."""
    at = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (operator's URL)
            body = r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return Page(url, at, error=f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Page(url, at, error=str(reason) or type(exc).__name__)
    try:
        return parse(url, at, body)
    except ValueError as exc:
        return Page(url, at, error=f"not a metrics page: {exc}")


def scrape(urls: Sequence[str], timeout: float = 2.0) -> list[Page]:
    """Every endpoint's page, scraped at the same time."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(lambda u: scrape_one(u, timeout), urls))


# -- from pages to figures (pure) -------------------------------------------------------------


def increase(previous: float | None, current: float) -> float:
    """A counter's increase between two scrapes: a decrease is a reset (the process started
    again from 0), so everything it counts now is new; no previous value is a new series."""
    if previous is None or current < previous:
        return current
    return current - previous


def counter_increase(
    prev: Page, cur: Page, name: str, labels: Mapping[str, str] | None = None
) -> float | None:
    """The increase of every series ``name`` (with ``labels``) of one endpoint between two of
    its pages, summed; None unless both pages were scraped and the current one has the series."""
    if not (prev.up and cur.up):
        return None
    found = cur.series(name, **dict(labels or {}))
    if not found:
        return None
    before = {tuple(sorted(lab.items())): v for lab, v in prev.series(name, **dict(labels or {}))}
    return sum(increase(before.get(tuple(sorted(lab.items()))), v) for lab, v in found)


def rate(
    prev: Sequence[Page], cur: Sequence[Page], name: str, labels: Mapping[str, str] | None = None
) -> float | None:
    """Per second, summed over the endpoints scraped both times (matched by URL): None when no
    endpoint has the counter in both scrapes."""
    before = {p.url: p for p in prev}
    total: float | None = None
    for page in cur:
        old = before.get(page.url)
        if old is None or page.at <= old.at:
            continue
        inc = counter_increase(old, page, name, labels)
        if inc is None:
            continue
        total = (total or 0.0) + inc / (page.at - old.at)
    return total


@dataclass(frozen=True)
class Endpoint:
    url: str
    component: str | None
    error: str | None  # None: it answered
    healthy: bool | None = None
    dependencies: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class DeadLetters:
    component: str
    reason: str
    total: float
    since_start: float  # counted since `top` started watching


@dataclass(frozen=True)
class PipelineView:
    """What ``inferledger top`` shows of the processors at one moment (``at``, wall clock)."""

    at: float
    endpoints: tuple[Endpoint, ...]
    events_per_s: float | None = None
    entries_per_s: float | None = None
    closed_per_s: float | None = None
    events_total: float | None = None
    entries_total: float | None = None
    closed_total: float | None = None
    lag: tuple[tuple[str, str, float], ...] = ()  # component, topic, messages (all partitions)
    watermark_ages: tuple[tuple[str, str, float], ...] = ()  # topic, partition, age in seconds
    closed_through_age: float | None = None
    dead_letters: tuple[DeadLetters, ...] = ()

    @property
    def oldest_watermark_age(self) -> float | None:
        return max((age for *_, age in self.watermark_ages), default=None)


def _sum(pages: Iterable[Page], name: str, labels: Mapping[str, str]) -> float | None:
    found = [t for p in pages if (t := p.total(name, **labels)) is not None]
    return sum(found) if found else None


class Tracker:
    """Successive scrapes in, :class:`PipelineView` out: keeps the previous pages (for rates)
    and the dead letters counted since the first scrape."""

    def __init__(self) -> None:
        self.previous: list[Page] = []
        self.dead_since: dict[tuple[str, str, str], float] = {}  # url, component, reason

    def update(self, pages: Sequence[Page]) -> PipelineView:
        prev = self.previous
        before = {p.url: p for p in prev}
        up = [p for p in pages if p.up]
        at = max((p.at for p in pages), default=time.time())
        endpoints = tuple(
            Endpoint(
                p.url,
                p.component,
                p.error,
                None if (h := p.total(HEALTHY)) is None else h >= 1,
                tuple((lab.get("dependency", "?"), v >= 1) for lab, v in p.series(DEPENDENCY_UP)),
            )
            for p in pages
        )
        lag: dict[tuple[str, str], float] = {}
        for p in up:
            for lab, v in p.series(LAG):
                if INTERNAL in lab.get("topic", ""):
                    continue
                where = (lab.get("component", "?"), lab.get("topic", "?"))
                lag[where] = lag.get(where, 0.0) + v
        marks = sorted(
            (lab.get("topic", "?"), lab.get("partition", "?"), at - v)
            for p in up
            for lab, v in p.series(WATERMARK)
        )
        through = [v for p in up for _, v in p.series(CLOSED_THROUGH)]
        dead: list[DeadLetters] = []
        for p in up:
            old = before.get(p.url)
            previous = {tuple(sorted(lab.items())): v for lab, v in old.series(DEAD_LETTERS)} if (
                old is not None and old.up
            ) else None  # fmt: skip
            for lab, v in p.series(DEAD_LETTERS):
                component = lab.get("component", p.component or "?")
                reason = lab.get("reason", "?")
                key = (p.url, component, reason)
                if previous is not None:  # counted between two scrapes of this endpoint
                    was = previous.get(tuple(sorted(lab.items())))
                    self.dead_since[key] = self.dead_since.get(key, 0.0) + increase(was, v)
                dead.append(DeadLetters(component, reason, v, self.dead_since.get(key, 0.0)))
        view = PipelineView(
            at=at,
            endpoints=endpoints,
            events_per_s=rate(prev, pages, *EVENTS_IN),
            entries_per_s=rate(prev, pages, *ENTRIES_OUT),
            closed_per_s=rate(prev, pages, *BUCKETS_CLOSED),
            events_total=_sum(up, *EVENTS_IN),
            entries_total=_sum(up, *ENTRIES_OUT),
            closed_total=_sum(up, *BUCKETS_CLOSED),
            lag=tuple((c, t, n) for (c, t), n in sorted(lag.items())),
            watermark_ages=tuple(marks),
            closed_through_age=(at - min(through)) if through else None,
            dead_letters=tuple(sorted(dead, key=lambda d: (d.component, d.reason))),
        )
        self.previous = list(pages)
        return view
