"""`inferledger proxy` in front of an OpenAI-compatible engine, driven with the official `openai`
client: each request becomes one inference event for the node that served it, with the token
counts from `usage`, and the events reach the ledger."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
import requests
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import create_engine, text

from tests.helpers import cli, free_port, read_topic, wait_http

# rented from a few minutes ago (every minute since then is priced, idle or not)
_FROM = (datetime.now(UTC) - timedelta(minutes=5)).replace(second=0, microsecond=0)
RATES = [
    {
        "resource_id": node,
        "price_per_hour": "36.00",
        "currency": "USD",
        "effective_from": _FROM.isoformat(),
        "source": "list",
    }
    for node in ("gpu-node-1", "gpu-node-2")
]


@pytest.fixture
def stack(cli_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    up_port, proxy_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", str(up_port)], stderr=subprocess.PIPE
    )
    env = dict(
        cli_env,
        INFERLEDGER_PROXY_UPSTREAMS=json.dumps(
            [
                {
                    "resource_id": "gpu-node-1",
                    "url": f"http://127.0.0.1:{up_port}",
                    "models": ["llama-70b"],
                    "gpu_count": 4,
                    "engine": "vllm",
                },
                {
                    "resource_id": "gpu-node-2",
                    "url": f"http://127.0.0.1:{up_port}",
                    "models": ["qwen-32b", "slow", "broken"],
                    "engine": "sglang",
                },
            ]
        ),
        INFERLEDGER_PROXY_KEYS=json.dumps({"sk-acme": "acme", "sk-beta": "beta"}),
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "proxy", "--listen", f"127.0.0.1:{proxy_port}"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        wait_http(f"http://127.0.0.1:{proxy_port}/healthz", proxy)
        yield {
            "proxy": proxy,
            "proxy_url": f"http://127.0.0.1:{proxy_port}/v1",
            "upstream_url": f"http://127.0.0.1:{up_port}/v1",
        }
    finally:
        for p in (proxy, upstream):
            if p.poll() is None:
                p.terminate()
                p.wait(30)


def test_proxy_meters_openai_requests_into_the_ledger(
    stack: dict[str, Any], cli_env: dict[str, str], settings: Any, tmp_path: Any
) -> None:
    rates = tmp_path / "rates.jsonl"
    rates.write_text("\n".join(json.dumps(r) for r in RATES))
    cli(cli_env, "ingest", "rates", str(rates))
    acme = openai.OpenAI(base_url=stack["proxy_url"], api_key="sk-acme", max_retries=0)
    beta = openai.OpenAI(base_url=stack["proxy_url"], api_key="sk-beta", max_retries=0)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "what does a GPU hour cost"}
    ]

    r = acme.chat.completions.create(model="llama-70b", messages=messages, max_tokens=7)
    assert r.usage is not None and r.usage.completion_tokens == 7
    chunks = list(
        beta.chat.completions.create(model="qwen-32b", messages=messages, max_tokens=5, stream=True)
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()
        == ["tok"] * 5
    )
    assert all(c.usage is None for c in chunks)  # it did not ask for usage: not passed on
    with_usage = list(
        acme.completions.create(
            model="llama-70b",
            prompt="one two three four five six",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 3
    c = beta.completions.create(model="qwen-32b", prompt="hello there", max_tokens=2)
    assert c.choices[0].text == "tok tok"
    with pytest.raises(openai.InternalServerError):
        acme.chat.completions.create(model="broken", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=stack["proxy_url"], api_key="sk-nobody", max_retries=0
        ).chat.completions.create(model="llama-70b", messages=messages)
    stream = acme.chat.completions.create(model="slow", messages=messages, stream=True)
    for n, _ in enumerate(stream):
        if n == 2:
            break
    stream.close()  # the client goes away mid-stream

    # what the proxy adds to a request (measured, not asserted: see bench/)
    direct = openai.OpenAI(base_url=stack["upstream_url"], api_key="x", max_retries=0)
    timings: dict[str, list[float]] = {"direct": [], "proxied": []}
    for _ in range(20):
        for name, client in (("direct", direct), ("proxied", acme)):
            t = time.perf_counter()
            client.chat.completions.create(model="llama-70b", messages=messages, max_tokens=1)
            timings[name].append(time.perf_counter() - t)
    overhead_ms = 1000 * (
        statistics.median(timings["proxied"]) - statistics.median(timings["direct"])
    )
    print(f"proxy overhead, median of 20 unary requests: {overhead_ms:.2f} ms")

    time.sleep(2)  # the cancelled stream's event is recorded when the proxy notices
    metrics = requests.get(stack["proxy_url"].removesuffix("/v1") + "/metrics", timeout=5).text
    assert 'inferledger_processed_total{component="proxy",counter="unauthorized"} 1.0' in metrics
    assert 'inferledger_processed_total{component="emitter",counter="recorded"} 26.0' in metrics
    stack["proxy"].send_signal(signal.SIGTERM)  # flushes the emitter
    assert stack["proxy"].wait(30) == 0

    events = [
        e
        for m in read_topic(settings.kafka_bootstrap, settings.topic("inference-events"))
        for e in m.get("events", [m])
    ]
    first = {e["model"] + "/" + e["status"]: e for e in events}
    assert len(events) == 6 + 20, [(e["model"], e["status"]) for e in events]
    llama = first["llama-70b/ok"]
    assert llama["resource_id"] == "gpu-node-1" and llama["gpu_count"] == 4
    assert llama["engine"] == "vllm" and llama["tenant_id"] == "acme"
    assert llama["cached_prompt_tokens"] == 4
    qwen = [e for e in events if e["model"] == "qwen-32b"]
    assert {e["resource_id"] for e in qwen} == {"gpu-node-2"}
    assert {e["tenant_id"] for e in qwen} == {"beta"}
    streamed = [e for e in qwen if e.get("first_token_at")]
    assert streamed and streamed[0]["completion_tokens"] == 5
    assert streamed[0]["started_at"] < streamed[0]["first_token_at"] <= streamed[0]["finished_at"]
    assert first["broken/error"]["resource_id"] == "gpu-node-2"
    assert first["slow/cancelled"]["tenant_id"] == "acme"

    cli(cli_env, "run", "all", "--until-idle")
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        statuses: dict[str, int] = dict(
            conn.execute(
                text("SELECT status, count(DISTINCT event_id) FROM counted_events GROUP BY 1")
            ).all()
        )
        per_tenant: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT tenant_id, sum(completions) FROM ledger_entries "
                    "WHERE tenant_id IS NOT NULL GROUP BY 1"
                )
            ).all()
        )
    assert statuses == {"ok": 24, "error": 1, "cancelled": 1}
    assert per_tenant == {"acme": 22, "beta": 2}
    cli(cli_env, "audit")


@pytest.mark.parametrize("upstream_id", ["cmpl-always-the-same", ""])
def test_proxy_counts_every_request_when_the_upstream_repeats_or_omits_its_response_id(
    upstream_id: str, cli_env: dict[str, str], settings: Any, tmp_path: Any
) -> None:
    """Defect 10: the event id was built from the upstream's response id, so an engine that
    repeats it (or leaves it empty) made every later request a duplicate, lost to the ledger.
    The proxy now makes its own id per request and keeps the upstream's as ``request_id``."""
    up_port, proxy_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", str(up_port)],
        env={**cli_env, "FAKE_UPSTREAM_ID": upstream_id},
        stderr=subprocess.PIPE,
    )
    nodes = [
        {"resource_id": node, "url": f"http://127.0.0.1:{up_port}", "models": [model]}
        for node, model in (("gpu-node-1", "llama-70b"), ("gpu-node-2", "qwen-32b"))
    ]
    env = dict(
        cli_env,
        INFERLEDGER_PROXY_UPSTREAMS=json.dumps(nodes),
        INFERLEDGER_PROXY_KEYS=json.dumps({"sk-acme": "acme", "sk-beta": "beta"}),
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "proxy", "--listen", f"127.0.0.1:{proxy_port}"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        wait_http(f"http://127.0.0.1:{proxy_port}/healthz", proxy)
        rates = tmp_path / "rates.jsonl"
        rates.write_text("\n".join(json.dumps(r) for r in RATES))
        cli(cli_env, "ingest", "rates", str(rates))
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "same id again"}]
        sent: dict[str, int] = {}
        for key, tenant in (("sk-acme", "acme"), ("sk-beta", "beta")):
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{proxy_port}/v1", api_key=key, max_retries=0
            )
            for model in ("llama-70b", "qwen-32b"):
                client.chat.completions.create(model=model, messages=messages, max_tokens=2)
                list(
                    client.chat.completions.create(
                        model=model, messages=messages, max_tokens=2, stream=True
                    )
                )
                client.completions.create(model=model, prompt="hello", max_tokens=2)
                sent[tenant] = sent.get(tenant, 0) + 3
        proxy.send_signal(signal.SIGTERM)  # flushes the emitter
        assert proxy.wait(30) == 0
    finally:
        for p in (proxy, upstream):
            if p.poll() is None:
                p.terminate()
                p.wait(30)

    events = [
        e
        for m in read_topic(settings.kafka_bootstrap, settings.topic("inference-events"))
        for e in m.get("events", [m])
    ]
    assert len(events) == 12
    assert len({e["event_id"] for e in events}) == 12, [e["event_id"] for e in events]
    # the upstream's id is kept where it says something, never as the idempotency key
    assert {e.get("request_id") for e in events} == {upstream_id or None}

    cli(cli_env, "run", "all", "--until-idle")
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        counted = conn.execute(text("SELECT count(DISTINCT event_id) FROM counted_events")).scalar()
        per_tenant: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT tenant_id, sum(completions) FROM ledger_entries "
                    "WHERE tenant_id IS NOT NULL GROUP BY 1"
                )
            ).all()
        )
    engine.dispose()
    assert counted == 12
    assert per_tenant == sent == {"acme": 6, "beta": 6}
    cli(cli_env, "audit")
