"""Issue 13, defect 2: kill -9 of the processors while out-of-order input streams in.

The attribution processor and the ledger writer run as separate streaming processes (``run
attribution``, ``run ledger``). A seeded scenario (five rated nodes with traffic, and a rated
spare node with none) arrives in chunks, each chunk out of order (shuffled within a sliding
window of event time), and between chunks one of the processes, or both, is killed with
SIGKILL and started again: at least 10 kills. Then ``run all --until-idle`` finishes the input.

The ledger must equal the pure core's answer for the whole input (net positions per resource,
bucket, tenant and model), count every event exactly once, and hold every idle bucket of the
spare node.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.helpers import (
    cli,
    counting_faults,
    expected_positions,
    explain_lost,
    fault_scenario,
    kill_group,
    position_diff,
    positions,
    publish_events,
    publish_rates,
    start_run,
)

SEED = 29
KILLS = 12

# bounded: a hang fails this test, not the suite
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def out_of_order(events, rng, window=40):
    """Finish order, shuffled within sliding windows of ``window`` events."""
    ordered = sorted(events, key=lambda e: e.finished_at)
    out = []
    for i in range(0, len(ordered), window // 2):
        part = ordered[i : i + window // 2]
        out.extend(part)
        j = max(0, len(out) - window)
        tail = out[j:]
        rng.shuffle(tail)
        out[j:] = tail
    return out


def test_kill9_during_out_of_order_stream_is_exact(cli_env, settings, tmp_path):
    rng = random.Random(SEED)
    events, rates = fault_scenario(SEED, n_events=1200)
    stream = out_of_order(events, rng)
    # contiguous chunks in stream order, each out of order inside
    size = -(-len(stream) // (KILLS + 1))
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    publish_rates(settings, rates)
    logs = {w: tmp_path / f"{w}.log" for w in ("attribution", "ledger")}
    procs = {w: start_run(cli_env, logs[w], w) for w in logs}
    kills: list[str] = []
    try:
        for n, chunk in enumerate(chunks):
            publish_events(settings, chunk, batch=rng.choice([5, 20, 50]))
            time.sleep(rng.uniform(2.0, 5.0))
            if len(kills) >= KILLS and n < len(chunks) - 1:
                continue
            victims = [["attribution"], ["ledger"], ["attribution", "ledger"]][n % 3]
            for w in victims:
                assert procs[w].poll() is None, f"{w} exited by itself:\n{logs[w].read_text()}"
                kill_group(procs[w], signal.SIGKILL)
                kills.append(w)
                procs[w] = start_run(cli_env, logs[w], w)
    finally:
        for p in procs.values():
            kill_group(p, signal.SIGKILL)
    assert len(kills) >= 10
    cli(cli_env, "run", "all", "--until-idle", timeout=240)

    want = expected_positions(events, rates)
    got = positions(settings.database_url)
    faults = counting_faults(settings.database_url, events)
    spare_want = sorted(k[1] for k in want if k[0] == "node-spare")
    spare_got = sorted(k[1] for k in got if k[0] == "node-spare")
    problems = []
    if faults != {"missing": [], "twice": [], "unknown": []}:
        problems.append(
            f"counting: {len(faults['missing'])} missing {faults['missing'][:10]}, "
            f"{len(faults['twice'])} twice, {len(faults['unknown'])} unknown"
        )
        problems += explain_lost(settings.database_url, events, faults["missing"])
    if spare_got != spare_want:
        problems.append(f"spare node: {len(spare_got)} of {len(spare_want)} idle buckets")
    if got != want:
        total_got = sum(v[0] for v in got.values())
        total_want = sum(v[0] for v in want.values())
        problems.append(f"ledger total {total_got} of {total_want}; {position_diff(got, want)}")
    assert not problems, f"after {len(kills)} kills:\n" + "\n".join(problems)
