"""The HTTP ingress (gateway and proxy) during a broker outage, on an embedded broker of its own.

- ``/healthz`` of the gateway and of the proxy turns 503 with ``kafka`` not connected once the
  broker is gone, and 200 again once it is back (it used to say ``connected`` from cached
  metadata);
- the proxy stopped (SIGTERM) while the broker is down exits within seconds, saying in one
  structured error line how many metered events were not delivered, with no traceback (it used
  to take 30 to 60 s and end in a traceback that did not say events were lost).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from services.runtime.config import Settings
from services.runtime.kafka import ensure_topics
from services.runtime.stack import EmbeddedBroker
from tests.helpers import free_port, wait_http, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
STOP_WITHIN_SECONDS = 10


def _health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        r = requests.get(f"{url}/healthz", timeout=10)
    except requests.RequestException as exc:
        return 0, {"error": repr(exc)}
    return r.status_code, r.json()


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *argv], env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def _broker_env(cli_env: dict[str, str], broker: EmbeddedBroker, prefix: str) -> dict[str, str]:
    ensure_topics(Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=1))
    return dict(
        cli_env,
        INFERLEDGER_KAFKA_BOOTSTRAP=broker.bootstrap,
        INFERLEDGER_TOPIC_PREFIX=prefix,
        INFERLEDGER_LOG_FORMAT="json",
    )


def _stopped(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_gateway_healthz_follows_the_broker(cli_env, tmp_path):
    broker = EmbeddedBroker().start(tmp_path / "broker.log")
    port = free_port()
    env = dict(
        _broker_env(cli_env, broker, "gwo."),
        INFERLEDGER_GATEWAY_TOKENS=json.dumps({"tok": {"name": "all"}}),
    )
    log = tmp_path / "gateway.log"
    gateway = _start(["services.cli.main", "gateway", "--listen", f"127.0.0.1:{port}"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", gateway)
        assert _health(url) == (200, {"ok": True, "kafka": "connected"})
        broker.stop()
        assert wait_until(lambda: _health(url)[0] == 503, 20), _health(url)
        status, body = _health(url)
        assert body["ok"] is False and body["kafka"] != "connected", body
        broker = EmbeddedBroker(port=broker.port).start(tmp_path / "broker-2.log")
        assert wait_until(lambda: _health(url)[0] == 200, 30), _health(url)
        assert _health(url)[1]["kafka"] == "connected"
    finally:
        _stopped(gateway)
        broker.stop()
    assert "Traceback" not in log.read_text()


def test_proxy_stops_within_seconds_during_an_outage_and_counts_what_it_lost(cli_env, tmp_path):
    broker = EmbeddedBroker().start(tmp_path / "broker.log")
    up_port, proxy_port = free_port(), free_port()
    env = dict(
        _broker_env(cli_env, broker, "pxo."),
        INFERLEDGER_PROXY_UPSTREAMS=json.dumps(
            [{"resource_id": "gpu-node-1", "url": f"http://127.0.0.1:{up_port}"}]
        ),
        INFERLEDGER_PROXY_KEYS=json.dumps({"sk-acme": "acme"}),
    )
    upstream = _start(["tests.fake_upstream", str(up_port)], env, tmp_path / "upstream.log")
    log = tmp_path / "proxy.log"
    proxy = _start(["services.cli.main", "proxy", "--listen", f"127.0.0.1:{proxy_port}"], env, log)
    url = f"http://127.0.0.1:{proxy_port}"

    def complete(n: int) -> None:
        for i in range(n):
            r = requests.post(
                f"{url}/v1/chat/completions",
                json={"model": "llama-70b", "messages": [{"role": "user", "content": f"hi {i}"}]},
                headers={"Authorization": "Bearer sk-acme"},
                timeout=30,
            )
            assert r.status_code == 200, r.text

    def sent() -> float:
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        for line in metrics.splitlines():
            if line.startswith('inferledger_processed_total{component="emitter",counter="sent"}'):
                return float(line.split()[-1])
        return 0.0

    try:
        wait_http(f"{url}/v1/models", upstream)
        wait_http(f"{url}/healthz", proxy)
        assert _health(url)[0] == 200
        complete(3)
        assert wait_until(lambda: sent() == 3, 20), sent()
        broker.stop()
        assert wait_until(lambda: _health(url)[0] == 503, 20), _health(url)
        assert _health(url)[1]["kafka"] != "connected"
        complete(5)  # metering never stalls the requests: these events cannot be delivered
        time.sleep(1)  # past the emitter's linger: they are with the producer now
        started = time.monotonic()
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(60)
        took = time.monotonic() - started
        print(f"proxy stopped {took:.1f} s after SIGTERM during the outage")
    finally:
        _stopped(proxy)
        _stopped(upstream)
        broker.stop()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    lost = [x for x in lines if x.get("event") == "proxy events undelivered"]
    assert len(lost) == 1 and lost[0]["level"] == "error", text[-3000:]
    assert lost[0]["undelivered"] == 5, lost
    assert took < STOP_WITHIN_SECONDS, f"the proxy took {took:.1f} s to stop"
