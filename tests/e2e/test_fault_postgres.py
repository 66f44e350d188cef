"""Issue 13, defect 4: Postgres cut for 30 s mid-stream.

The processors of a streaming ``run all`` reach Postgres through a TCP proxy in the test
(``INFERLEDGER_DATABASE_URL`` points at it). Half way through the input the proxy closes every
connection and refuses new ones for 30 s, then lets them through again. Expected behaviour
(issue 13, "Durability under faults"): the processes stay up, retry with backoff, answer
``/healthz`` with a non-2xx status while Postgres is away and 200 once it is back (on the
``INFERLEDGER_METRICS_LISTEN`` ports), and the ledger ends exact after ``run all --until-idle``.
"""

from __future__ import annotations

import random
import signal
import time

import pytest
import requests
from sqlalchemy.engine import make_url

from services.runtime.supervise import COMPONENTS
from tests.helpers import (
    TcpProxy,
    cli,
    counting_faults,
    expected_positions,
    explain_lost,
    fault_scenario,
    free_port,
    kill_group,
    position_diff,
    positions,
    process_tree,
    publish_events,
    publish_rates,
    start_run,
)

SEED = 41
CUT_SECONDS = 30

# bounded: a hang fails this test, not the suite
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _health(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except requests.RequestException:
        return None


def test_postgres_cut_for_30s_mid_stream(cli_env, settings, tmp_path):
    events, rates = fault_scenario(SEED)
    stream = sorted(events, key=lambda e: e.finished_at)
    rng = random.Random(SEED)
    chunks = [stream[i : i + 50] for i in range(0, len(stream), 50)]
    for c in chunks:
        rng.shuffle(c)
    url = make_url(settings.database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    port = free_port()
    env = dict(
        cli_env,
        INFERLEDGER_DATABASE_URL=url.set(host="127.0.0.1", port=proxy.port).render_as_string(False),
        INFERLEDGER_METRICS_LISTEN=f"127.0.0.1:{port}",
    )
    publish_rates(settings, rates)
    log = tmp_path / "stream.log"
    proc = start_run(env, log, "all")
    observed: list[str] = []
    try:
        time.sleep(4)
        for c in chunks[:4]:
            publish_events(settings, c)
            time.sleep(2)
        children = process_tree(proc.pid)[1:]
        assert len(children) == len(COMPONENTS), f"run all has children {children}"
        healthy_before = (_health(port), _health(port + 1))
        proxy.cut()
        cut_health: set[tuple[int | None, int | None]] = set()
        deadline = time.monotonic() + CUT_SECONDS
        for c in chunks[4:6]:
            publish_events(settings, c)
        while time.monotonic() < deadline:
            cut_health.add((_health(port), _health(port + 1)))
            proxy.cut()  # connections made meanwhile were refused; close any stragglers
            time.sleep(2)
        proxy.restore()
        for c in chunks[6:]:
            publish_events(settings, c)
            time.sleep(1)
        time.sleep(15)
        after_health = (_health(port), _health(port + 1))
        alive = [p for p in children if p in process_tree(proc.pid)]
        if proc.poll() is not None or len(alive) != len(COMPONENTS):
            observed.append(
                f"processes exited during/after the cut: run all rc={proc.poll()}, "
                f"children alive {alive} of {children}"
            )
        if healthy_before != (200, 200):
            observed.append(f"/healthz before the cut: {healthy_before}")
        if any(200 <= (s or 0) < 300 for h in cut_health for s in h):
            observed.append(f"/healthz answered 2xx while Postgres was cut: {cut_health}")
        if after_health != (200, 200):
            observed.append(f"/healthz after restore: {after_health}")
    finally:
        proc.send_signal(signal.SIGTERM)
        if kill_group(proc, 0, 40) is None:
            kill_group(proc, signal.SIGKILL)
        proxy.close()
    text = log.read_text(errors="replace")
    for needle in ("publishing failed; stopping", "Traceback", "crashed"):
        if needle in text:
            observed.append(f"log of the streaming run has {needle!r}")
    cli(cli_env, "run", "all", "--until-idle", timeout=180)
    faults = counting_faults(settings.database_url, events)
    got, want = positions(settings.database_url), expected_positions(events, rates)
    if faults != {"missing": [], "twice": [], "unknown": []}:
        observed.append(
            f"counting: {len(faults['missing'])} missing {faults['missing'][:8]}, "
            f"{len(faults['twice'])} twice"
        )
        observed += explain_lost(settings.database_url, events, faults["missing"][:10])
    if got != want:
        observed.append(position_diff(got, want))
    assert not observed, "\n".join(observed)
