"""`inferledger gateway` driven with a real HTTP client: valid events land in the ledger, and
a bad-input corpus is rejected with the right status and reason while valid events in the same
request still land."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import cli, free_port, ledger, read_topic, wait_http

DATA = Path(__file__).resolve().parents[1] / "data"
TOKENS = {
    "tok-all": {"name": "all"},
    "tok-node2": {"name": "node-2 only", "resources": ["node-2"]},
}


def event(event_id: str, **over: Any) -> dict[str, Any]:
    e = {
        "event_id": event_id,
        "tenant_id": "acme",
        "resource_id": "node-1",
        "model": "llama-70b",
        "engine": "vllm",
        "started_at": "2024-01-01T00:00:00Z",
        "finished_at": "2024-01-01T00:00:20Z",
        "prompt_tokens": 100,
        "cached_prompt_tokens": 0,
        "completion_tokens": 10,
        "status": "ok",
    }
    e.update(over)
    return e


@pytest.fixture
def gateway_proc(cli_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = dict(
        cli_env,
        INFERLEDGER_GATEWAY_TOKENS=json.dumps(TOKENS),
        INFERLEDGER_GATEWAY_MAX_BODY_BYTES=str(1024 * 1024),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "gateway", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


@pytest.fixture
def gateway(gateway_proc: tuple[str, subprocess.Popen[bytes]]) -> str:
    return gateway_proc[0]


def post(url: str, path: str, body: bytes | str, ctype: str, token: str | None = "tok-all"):
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(f"{url}{path}", data=body, headers=headers, timeout=30)


def test_gateway_accepts_every_form_and_rejects_the_bad_input_corpus(
    gateway: str, cli_env: dict[str, str], settings: Any
) -> None:
    url = gateway
    rates = (DATA / "worked_example_rates.jsonl").read_bytes()
    assert post(url, "/v1/rates", rates, "application/x-ndjson").status_code == 200

    # every accepted form, each with one valid event
    assert post(url, "/v1/events", json.dumps(event("json-1")), "application/json").json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    ndjson = "\n".join(json.dumps(event(f"nd-{i}")) for i in range(3))
    assert post(url, "/v1/events", ndjson, "application/x-ndjson").json()["accepted"] == 3
    ce = {
        "specversion": "1.0",
        "type": "inferledger.inference_event.v1",
        "source": "/cluster-a",
        "id": "ce-1",
        "data": event("ce-1"),
    }
    r = post(url, "/v1/events", json.dumps(ce), "application/cloudevents+json")
    assert r.status_code == 200 and r.json()["accepted"] == 1
    r = post(url, "/v1/events", json.dumps(ce), "application/cloudevents+json")  # again
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    unknown = dict(ce, id="ce-3", type="com.example.other")
    batch = [dict(ce, id="ce-2", data=event("ce-2")), unknown]
    r = post(url, "/v1/events", json.dumps(batch), "application/cloudevents-batch+json")
    assert r.status_code == 207
    assert [x["reason"] for x in r.json()["rejected"]] == ["unknown_type"]

    # a request mixing valid events with every kind of bad event: 207, the valid ones land
    bad_items = [
        event("bad-naive", started_at="2024-01-01T00:00:00"),
        event("bad-negative", prompt_tokens=-5),
        event("bad-order", started_at="2024-01-01T00:00:30Z"),
        event("bad-type", completion_tokens="many"),
        {k: v for k, v in event("bad-missing").items() if k != "tenant_id"},
        event("bad-cached", cached_prompt_tokens=500),
    ]
    mixed = [event("mixed-ok-1"), *bad_items, event("mixed-ok-2")]
    r = post(url, "/v1/events", json.dumps(mixed), "application/json")
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1, 2, 3, 4, 5, 6]
    assert {x["reason"] for x in body["rejected"]} == {"invalid_event"}
    details = " ".join(x["detail"] for x in body["rejected"])
    for needle in ("naive", "greater than or equal to 0", "finished_at", "tenant_id", "cached"):
        assert needle in details, needle
    ndjson_bad = json.dumps(event("nd-ok")) + "\n{not json\n" + json.dumps(event("nd-ok-2"))
    r = post(url, "/v1/events", ndjson_bad, "application/x-ndjson")
    assert r.status_code == 207 and r.json()["rejected"][0]["reason"] == "invalid_json"

    # whole requests that are rejected
    cases = [
        (b"{not json", "application/json", "tok-all", 400, "invalid_json"),
        (b'{"event_id": "\xff\xfe"}', "application/json", "tok-all", 400, "invalid_utf8"),
        (json.dumps(event("anon-x")), "application/json", None, 401, "missing_token"),
        (json.dumps(event("wrong-x")), "application/json", "wrong", 401, "invalid_token"),
        (b"x" * (10 * 1024 * 1024), "application/json", None, 401, "missing_token"),
        (json.dumps(event("x")), "text/csv", "tok-all", 415, "unsupported_media_type"),
        (b"x" * (10 * 1024 * 1024), "application/json", "tok-all", 413, "body_too_large"),
        (json.dumps([event("y", prompt_tokens=-1)]), "application/json", "tok-all", 400, None),
        (json.dumps(unknown), "application/cloudevents+json", "tok-all", 400, None),
    ]
    for body_, ctype, token, status, reason in cases:
        r = post(url, "/v1/events", body_, ctype, token)
        assert r.status_code == status, (reason, r.status_code, r.text)
        if reason is not None:
            assert r.json()["error"] == reason
    # a token limited to node-2 may write node-2 only
    scoped = [event("scoped-ok", resource_id="node-2"), event("scoped-denied")]
    r = post(url, "/v1/events", json.dumps(scoped), "application/json", "tok-node2")
    assert r.status_code == 207 and r.json()["rejected"][0]["reason"] == "forbidden"
    r = post(url, "/v1/events", json.dumps(event("denied")), "application/json", "tok-node2")
    assert r.status_code == 403

    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert 'inferledger_gateway_items_total{kind="events",outcome="accepted"} 11.0' in metrics
    assert "inferledger_dead_letters_total" in metrics
    assert (
        'inferledger_gateway_unauthenticated_total{endpoint="events",reason="missing_token"} 2.0'
        in metrics
    )

    # dead letters: one per rejected item or request of a known token, with reason, source,
    # payload and the credential that sent it (its name and id, never the token)
    dlq = read_topic(settings.kafka_bootstrap, settings.topic("inference-events") + ".dlq")
    reasons = [d["reason"] for d in dlq]
    assert all(d["source"] == "gateway" for d in dlq)
    for reason in (
        "invalid_event",
        "invalid_json",
        "invalid_utf8",
        "unsupported_media_type",
        "body_too_large",
        "unknown_type",
        "forbidden",
    ):
        assert reason in reasons, reason
    # unauthenticated requests leave nothing behind: no record, no body
    assert "missing_token" not in reasons and "invalid_token" not in reasons
    assert not any("anon-x" in d["payload"] or "wrong-x" in d["payload"] for d in dlq)
    assert {(d["credential"], d["credential_id"][:7]) for d in dlq} == {
        ("all", "sha256:"),
        ("node-2 only", "sha256:"),
    }
    assert not any(token in json.dumps(dlq) for token in TOKENS)
    naive = next(d for d in dlq if "bad-naive" in d["payload"])
    assert naive["reason"] == "invalid_event" and "naive" in naive["detail"]

    # the accepted events reach the ledger
    cli(cli_env, "run", "all", "--until-idle")
    rows = ledger(settings.database_url)
    completions = sum(r[4] for r in rows.values() if r[0] == "usage")
    assert completions == 11  # json-1, nd-0..2, ce-1, ce-2, mixed-ok-1/2, nd-ok(2), scoped-ok

