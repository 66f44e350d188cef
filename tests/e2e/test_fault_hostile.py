"""Issue 13: a hostile corpus written straight to every topic, beside a valid workload.

Raw producers (no validation on the way in, as a misbehaving or malicious client would) write
to ``inference-events``, ``gpu-rates``, ``gpu-billing`` and ``cost-allocations``: tombstones,
malformed JSON, invalid UTF-8, 5 MB values, 10,000 levels of nesting, NaN and Infinity in
money, negative and absurd rates and bills, NUL and other control characters in ids and names,
10^30 token and GPU counts, a six-year request, events finishing in 2030 and in 9999, a reused
event id with other times, and an event whose message key is not its resource id. Unicode and
SQL text in ids are valid input (DESIGN.md section 2 forbids control characters only) and are
part of the valid workload. Hostile rates and bills name a resource with no traffic
(``node-hostile``), so that accepting one shows up as ledger entries nobody expects.

``run all --until-idle`` must exit 0 within a bound; the valid input must be exact (net
positions of the pure core, every event counted once); every hostile message must be
dead-lettered on ``<topic>.dlq`` with a reason and its partition and offset, or (a tombstone)
counted as skipped; and the peak resident memory of each processor must stay under 600 MB.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.contracts import InferenceEvent, dumps
from services.runtime.kafka import make_producer
from tests.helpers import (
    FAULT_EPOCH,
    counting_faults,
    expected_positions,
    fault_scenario,
    kill_group,
    position_diff,
    positions,
    process_tree,
    publish_events,
    publish_rates,
    read_topic,
    vm_hwm_kb,
)

SEED = 53
RUN_LIMIT_S = 150
PEAK_LIMIT_KB = 600 * 1024
RSS_KILL_KB = 1500 * 1024  # a runaway child is stopped before it hurts the machine
MB5 = 5 * 1024 * 1024

# bounded: a hang fails this test, not the suite
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _event(**over: Any) -> dict[str, Any]:
    t0 = datetime.fromisoformat(FAULT_EPOCH) + timedelta(minutes=30)
    e = {
        "type": "inferledger.inference_event.v1",
        "event_id": "hostile",
        "tenant_id": "tenant-0",
        "resource_id": "node-1",
        "model": "llama-3.1-8b",
        "engine": "vllm",
        "started_at": t0.isoformat(),
        "finished_at": (t0 + timedelta(seconds=3)).isoformat(),
        "prompt_tokens": 10,
        "cached_prompt_tokens": 0,
        "completion_tokens": 5,
        "status": "ok",
        "gpu_count": 1,
    }
    e.update(over)
    return e


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


DEEP = b"[" * 10_000 + b"]" * 10_000


def hostile_corpus() -> list[tuple[str, str, bytes | None, bytes | None]]:
    """(name, topic, key, value) of every hostile message."""
    ev, rt, bl, al = "inference-events", "gpu-rates", "gpu-billing", "cost-allocations"
    n1 = b"node-1"
    rate = {
        "type": "inferledger.gpu_rate.v1",
        "resource_id": "node-hostile",
        "price_per_hour": "1.00",
        "currency": "USD",
        "effective_from": FAULT_EPOCH,
        "source": "list",
    }
    bill = {
        "type": "inferledger.billing_line.v1",
        "line_id": "hostile-line",
        "resource_id": "node-hostile",
        "period_start": FAULT_EPOCH,
        "period_end": "2026-11-02T11:00:00+00:00",
        "cost": "1.00",
        "currency": "USD",
        "charge_category": "usage",
    }
    entry = {
        "entry_id": "e" * 32,
        "entry_kind": "usage",
        "cost_basis": "provisional",
        "tenant_id": "tenant-0",
        "model": "m",
        "resource_id": "node-1",
        "bucket_start": FAULT_EPOCH,
        "bucket_seconds": 60,
        "completions": 0,
        "failed_requests": 0,
        "prompt_tokens": 0,
        "cached_prompt_tokens": 0,
        "completion_tokens": 0,
        "work_units": "0",
        "busy_seconds": "0",
        "amount": "NaN",
        "currency": "USD",
        "billing_line_ids": [],
    }
    alloc = {
        "type": "inferledger.cost_allocation.v1",
        "resource_id": "node-1",
        "bucket_start": FAULT_EPOCH,
        "bucket_seconds": 60,
        "entries": [entry],
        "counted_events": [],
    }
    hr = b"node-hostile"
    out: list[tuple[str, str, bytes | None, bytes | None]] = []
    for topic, key in ((ev, n1), (rt, hr), (bl, hr), (al, n1)):
        out += [
            (f"{topic}: tombstone", topic, key, None),
            (f"{topic}: malformed JSON", topic, key, b'{"type": "inferledger.'),
            (f"{topic}: invalid UTF-8", topic, key, b'{"event_id": "\xff\xfe\xc3"}'),
            (f"{topic}: 5 MB value", topic, key, _j({"type": "x", "pad": "A" * MB5})),
            (f"{topic}: 10,000 levels of nesting", topic, key, DEEP),
        ]
    big = 10**30
    out += [
        ("event: NUL in model", ev, n1, _j(_event(event_id="h-nul-model", model="ll\x00ama"))),
        ("event: NUL in event_id", ev, n1, _j(_event(event_id="h-nul\x00id"))),
        ("event: BEL in tenant_id", ev, n1, _j(_event(event_id="h-bel", tenant_id="t\x07"))),
        ("event: 10^30 tokens", ev, n1, _j(_event(event_id="h-tokens", completion_tokens=big))),
        ("event: gpu_count 10^30", ev, n1, _j(_event(event_id="h-gpus", gpu_count=big))),
        ("event: NaN tokens", ev, n1, b'{"event_id": "h-nan", "prompt_tokens": NaN}'),
        (
            "event: six-year request",
            ev,
            n1,
            _j(
                _event(
                    event_id="h-six-years",
                    started_at="2020-11-02T10:00:00+00:00",
                    finished_at="2026-11-02T10:00:00+00:00",
                )
            ),
        ),
        (
            "event: finishes in 2030",
            ev,
            n1,
            _j(_event(event_id="h-2030", finished_at="2030-01-01T00:00:00+00:00")),
        ),
        (
            "event: finishes in 9999",
            ev,
            n1,
            _j(_event(event_id="h-9999", finished_at="9999-12-31T23:59:59+00:00")),
        ),
        (
            "event: reused event_id, other times",
            ev,
            n1,
            _j(
                _event(
                    event_id="reused-id",
                    started_at="2026-11-02T11:10:00+00:00",
                    finished_at="2026-11-02T11:12:00+00:00",
                )
            ),
        ),
        ("rate: NaN price", rt, hr, _j({**rate, "price_per_hour": "NaN"})),
        ("rate: Infinity price", rt, hr, _j({**rate, "price_per_hour": "Infinity"})),
        ("rate: negative price", rt, hr, _j({**rate, "price_per_hour": "-5.00"})),
        ("rate: 10^30 price", rt, hr, _j({**rate, "price_per_hour": "1e30"})),
        ("rate: NUL in resource_id", rt, hr, _j({**rate, "resource_id": "node-\x00"})),
        ("bill: NaN cost", bl, hr, _j({**bill, "line_id": "h-nan", "cost": "NaN"})),
        ("bill: Infinity cost", bl, hr, _j({**bill, "line_id": "h-inf", "cost": "-Infinity"})),
        ("bill: 10^30 cost", bl, hr, _j({**bill, "line_id": "h-big", "cost": "1e30"})),
        ("allocation: NaN amount", al, n1, _j(alloc)),
        (
            "allocation: NUL in entry_id",
            al,
            n1,
            _j({**alloc, "entries": [{**entry, "entry_id": "x\x00" * 16, "amount": "1"}]}),
        ),
        (
            "allocation: 10^30 amount",
            al,
            n1,
            _j({**alloc, "entries": [{**entry, "amount": "1" + "0" * 30}]}),
        ),
    ]
    return out


def valid_extras() -> tuple[list[InferenceEvent], InferenceEvent]:
    """Valid events with unicode and SQL text in ids, the first copy of ``reused-id``, and
    one event that arrives under a key that is not its resource id."""
    t0 = datetime.fromisoformat(FAULT_EPOCH) + timedelta(minutes=20)
    specs = [
        ("ev-ünï-😀-租户", "租户-ü-🙂", "模型/β"),
        ("ev'); DROP TABLE ledger_entries; --", "' OR 1=1 --", "llama-3.1-8b"),
        ("reused-id", "tenant-1", "llama-3.1-70b"),
    ]
    extras = [
        InferenceEvent.model_validate(
            _event(
                event_id=eid,
                tenant_id=tenant,
                model=model,
                resource_id="node-2",
                started_at=(t0 + timedelta(seconds=7 * i)).isoformat(),
                finished_at=(t0 + timedelta(seconds=7 * i + 90)).isoformat(),
            )
        )
        for i, (eid, tenant, model) in enumerate(specs)
    ]
    wrong_key = InferenceEvent.model_validate(
        _event(event_id="ev-wrong-key", resource_id="node-3", tenant_id="tenant-4")
    )
    return extras, wrong_key


def test_hostile_corpus_on_every_topic(cli_env, settings, tmp_path):
    events, rates = fault_scenario(SEED, n_events=300)
    extras, wrong_key = valid_extras()
    first, second = events[:150], events[150:]
    publish_rates(settings, rates)
    publish_events(settings, first + extras)
    producer = make_producer(settings, max_request_size=12_000_000)
    sent: dict[tuple[str, int, int], str] = {}
    tombstones = 0
    try:
        corpus = hostile_corpus()
        random.Random(SEED).shuffle(corpus)
        for name, topic, key, value in corpus:
            md = producer.send(settings.topic(topic), key=key, value=value).get(60)
            if value is None:
                tombstones += 1
            else:
                sent[(settings.topic(topic), md.partition, md.offset)] = name
        md = producer.send(
            settings.topic("inference-events"), key=b"wrong-key", value=dumps(wrong_key)
        ).get(60)
        producer.flush(60)
    finally:
        producer.close(10)
    publish_events(settings, second)
    valid = events + extras + [wrong_key]

    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "run", "all", "--until-idle"],
            env=cli_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    peak: dict[int, int] = {}
    problems: list[str] = []
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < RUN_LIMIT_S:
            for pid in process_tree(proc.pid):
                peak[pid] = max(peak.get(pid, 0), vm_hwm_kb(pid))
            if max(peak.values(), default=0) > RSS_KILL_KB:
                problems.append(f"a processor passed {RSS_KILL_KB // 1024} MB: stopped")
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        if proc.poll() is None:
            problems.append(f"`run all --until-idle` still running after {elapsed:.0f} s")
        elif proc.returncode != 0:
            problems.append(f"`run all --until-idle` exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            kill_group(proc, signal.SIGKILL, 20)
    text = log.read_text(errors="replace")
    errors = sorted(
        {ln.strip()[:200] for ln in text.splitlines() if "Error" in ln and "Traceback" not in ln}
    )[:8]
    if max(peak.values(), default=0) > PEAK_LIMIT_KB:
        problems.append(f"peak memory (VmHWM) {max(peak.values()) // 1024} MB")

    dead = []
    for topic in ("inference-events", "gpu-rates", "gpu-billing", "cost-allocations"):
        dead += read_topic(settings.kafka_bootstrap, settings.topic(topic) + ".dlq", quiet_s=2)
    lettered = {(d.get("topic"), d.get("partition"), d.get("offset")) for d in dead}
    no_reason = [d for d in dead if not d.get("reason")]
    missing = sorted(name for where, name in sent.items() if where not in lettered)
    if missing:
        problems.append(f"{len(missing)} of {len(sent)} hostile messages not dead-lettered:")
        problems += [f"  - {m}" for m in missing]
    if no_reason:
        problems.append(f"{len(no_reason)} dead letters without a reason")
    skipped = sum(
        int(n)
        for ln in text.splitlines()
        if ln.startswith("{") and "finished" in ln
        for k, n in json.loads(ln).items()
        if "tombstone" in k and isinstance(n, int)
    )
    if skipped < tombstones:
        problems.append(f"{tombstones} tombstones sent, {skipped} counted as skipped")

    faults = counting_faults(settings.database_url, valid)
    if faults != {"missing": [], "twice": [], "unknown": []}:
        problems.append(
            f"valid input: {len(faults['missing'])} events never counted "
            f"{faults['missing'][:6]}, {len(faults['twice'])} twice, "
            f"{len(faults['unknown'])} unknown counted {faults['unknown'][:6]}"
        )
    got, want = positions(settings.database_url), expected_positions(valid, rates)
    if got != want:
        problems.append("valid input not exact: " + position_diff(got, want, 6))
    if problems and errors:
        problems.append("errors in the run's log:")
        problems += [f"  {e}" for e in errors]
    assert not problems, "\n".join(problems)
