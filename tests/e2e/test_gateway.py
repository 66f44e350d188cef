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

from services.runtime.kafka import dead_letter, make_producer
from tests.helpers import cli, free_port, gateway_event, ledger, query_rows, read_topic, wait_http

DATA = Path(__file__).resolve().parents[1] / "data"
TOKENS = {
    "tok-all": {"name": "all"},
    "tok-node2": {"name": "node-2 only", "resources": ["node-2"]},
}


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
    assert post(
        url, "/v1/events", json.dumps(gateway_event("json-1")), "application/json"
    ).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    ndjson = "\n".join(json.dumps(gateway_event(f"nd-{i}")) for i in range(3))
    assert post(url, "/v1/events", ndjson, "application/x-ndjson").json()["accepted"] == 3
    ce = {
        "specversion": "1.0",
        "type": "inferledger.inference_event.v1",
        "source": "/cluster-a",
        "id": "ce-1",
        "data": gateway_event("ce-1"),
    }
    r = post(url, "/v1/events", json.dumps(ce), "application/cloudevents+json")
    assert r.status_code == 200 and r.json()["accepted"] == 1
    r = post(url, "/v1/events", json.dumps(ce), "application/cloudevents+json")  # again
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    unknown = dict(ce, id="ce-3", type="com.example.other")
    batch = [dict(ce, id="ce-2", data=gateway_event("ce-2")), unknown]
    r = post(url, "/v1/events", json.dumps(batch), "application/cloudevents-batch+json")
    assert r.status_code == 207
    assert [x["reason"] for x in r.json()["rejected"]] == ["unknown_type"]

    # a request mixing valid events with every kind of bad event: 207, the valid ones land
    bad_items = [
        gateway_event("bad-naive", started_at="2024-01-01T00:00:00"),
        gateway_event("bad-negative", prompt_tokens=-5),
        gateway_event("bad-order", started_at="2024-01-01T00:00:30Z"),
        gateway_event("bad-type", completion_tokens="many"),
        {k: v for k, v in gateway_event("bad-missing").items() if k != "tenant_id"},
        gateway_event("bad-cached", cached_prompt_tokens=500),
    ]
    mixed = [gateway_event("mixed-ok-1"), *bad_items, gateway_event("mixed-ok-2")]
    r = post(url, "/v1/events", json.dumps(mixed), "application/json")
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1, 2, 3, 4, 5, 6]
    assert {x["reason"] for x in body["rejected"]} == {"invalid_event"}
    details = " ".join(x["detail"] for x in body["rejected"])
    for needle in ("naive", "greater than or equal to 0", "finished_at", "tenant_id", "cached"):
        assert needle in details, needle
    ndjson_bad = (
        json.dumps(gateway_event("nd-ok")) + "\n{not json\n" + json.dumps(gateway_event("nd-ok-2"))
    )
    r = post(url, "/v1/events", ndjson_bad, "application/x-ndjson")
    assert r.status_code == 207 and r.json()["rejected"][0]["reason"] == "invalid_json"

    # whole requests that are rejected
    cases: list[tuple[bytes | str, str, str | None, int, str | None]] = [
        (b"{not json", "application/json", "tok-all", 400, "invalid_json"),
        (b'{"event_id": "\xff\xfe"}', "application/json", "tok-all", 400, "invalid_utf8"),
        (json.dumps(gateway_event("anon-x")), "application/json", None, 401, "missing_token"),
        (json.dumps(gateway_event("wrong-x")), "application/json", "wrong", 401, "invalid_token"),
        (b"x" * (10 * 1024 * 1024), "application/json", None, 401, "missing_token"),
        (json.dumps(gateway_event("x")), "text/csv", "tok-all", 415, "unsupported_media_type"),
        (json.dumps(gateway_event("x")), "text/plain", "tok-all", 415, "unsupported_media_type"),
        (b"x" * (10 * 1024 * 1024), "application/json", "tok-all", 413, "body_too_large"),
        (
            json.dumps([gateway_event("y", prompt_tokens=-1)]),
            "application/json",
            "tok-all",
            400,
            None,
        ),
        (json.dumps(unknown), "application/cloudevents+json", "tok-all", 400, None),
    ]
    for body_, ctype, token, status, reason in cases:
        r = post(url, "/v1/events", body_, ctype, token)
        assert r.status_code == status, (reason, r.status_code, r.text)
        if reason is not None:
            assert r.json()["error"] == reason
    # a token limited to node-2 may write node-2 only
    scoped = [gateway_event("scoped-ok", resource_id="node-2"), gateway_event("scoped-denied")]
    r = post(url, "/v1/events", json.dumps(scoped), "application/json", "tok-node2")
    assert r.status_code == 207 and r.json()["rejected"][0]["reason"] == "forbidden"
    r = post(
        url, "/v1/events", json.dumps(gateway_event("denied")), "application/json", "tok-node2"
    )
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


def counted(db_url: str) -> set[str]:
    return {r[0] for r in query_rows(db_url, "SELECT event_id FROM counted_events")}


def test_dlq_replay_applies_the_gateways_authorization_again(
    gateway_proc: tuple[str, subprocess.Popen[bytes]], cli_env: dict[str, str], settings: Any
) -> None:
    """Defect 6: `dlq replay --source gateway` sent on what the gateway refused with 401 and
    403, and it landed in the ledger. Now a 401 leaves nothing to replay, and a 403 goes back
    only if its token may write it now, or if the operator names it and says so."""
    url, proc = gateway_proc
    rates = (DATA / "worked_example_rates.jsonl").read_bytes()
    assert post(url, "/v1/rates", rates, "application/x-ndjson").status_code == 200
    assert (
        post(url, "/v1/events", json.dumps(gateway_event("ok-1")), "application/json").status_code
        == 200
    )
    anon = post(url, "/v1/events", json.dumps(gateway_event("anon-1")), "application/json", None)
    wrong = post(
        url, "/v1/events", json.dumps(gateway_event("wrong-1")), "application/json", "tok-nope"
    )
    assert (anon.status_code, wrong.status_code) == (401, 401)
    for denied in ("denied-1", "denied-2"):  # tok-node2 may not write node-1
        r = post(
            url, "/v1/events", json.dumps(gateway_event(denied)), "application/json", "tok-node2"
        )
        assert r.status_code == 403
    # what an older gateway wrote for a request without a token: body and all
    topic = settings.topic("inference-events")
    producer = make_producer(settings)
    legacy = dead_letter(
        topic,
        "missing_token",
        "no valid bearer token",
        json.dumps(gateway_event("legacy-anon")),
        65536,
        source="gateway",
    )
    producer.send(f"{topic}.dlq", legacy)
    producer.flush(30)
    producer.close(10)

    env = {**cli_env, "INFERLEDGER_GATEWAY_TOKENS": json.dumps(TOKENS)}  # the gateway's config
    for selector in (["--source", "gateway"], ["--all"], ["--reason", "missing_token"]):
        out = cli(env, "dlq", "replay", *selector)
        result = json.loads(out.stdout)
        assert result["sent"] == 0, (selector, out.stdout, out.stderr)
    assert result["skipped_by_reason"] == {"unauthenticated": 1}
    result = json.loads(cli(env, "dlq", "replay", "--source", "gateway").stdout)
    assert result["skipped_by_reason"] == {"forbidden": 2, "unauthenticated": 1}
    cli(cli_env, "run", "all", "--until-idle")
    assert counted(settings.database_url) == {"ok-1"}

    # the override needs the dead letters named one by one
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "dlq",
            "replay",
            "--source",
            "gateway",
            "--include-unauthorized",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--record" in refused.stderr
    listed = cli(env, "dlq", "list", "--source", "gateway", "--format", "jsonl").stdout
    records = [json.loads(line) for line in listed.splitlines()]
    assert {r["reason"] for r in records} == {"forbidden", "missing_token"}
    assert not any("anon-1" in r["payload"] or "wrong-1" in r["payload"] for r in records)
    denied_1 = next(r for r in records if "denied-1" in r["payload"])
    assert denied_1["credential"] == "node-2 only"
    position = f"{denied_1['dlq_topic']}:{denied_1['dlq_partition']}:{denied_1['dlq_offset']}"
    out = cli(env, "dlq", "replay", "--record", position)  # named, but not overridden
    assert json.loads(out.stdout)["sent"] == 0 and "forbidden" in out.stderr
    out = cli(env, "dlq", "replay", "--record", position, "--include-unauthorized")
    assert json.loads(out.stdout) | {"problems": []} == {
        "sent": 1,
        "sent_unauthorized": 1,
        "by_topic": {topic: 1},
        "skipped": 0,
        "skipped_by_reason": {},
        "problems": [],
        "dry_run": False,
    }
    cli(cli_env, "run", "all", "--until-idle")
    assert counted(settings.database_url) == {"ok-1", "denied-1"}

    # the cause fixed: once the token may write node-1, its refused events go back as they are
    widened = {**TOKENS, "tok-node2": {"name": "node-2 only", "resources": ["node-1", "node-2"]}}
    env_widened = {**cli_env, "INFERLEDGER_GATEWAY_TOKENS": json.dumps(widened)}
    result = json.loads(cli(env_widened, "dlq", "replay", "--reason", "forbidden").stdout)
    assert result["sent"] == 2 and result["sent_unauthorized"] == 0
    # a token that is gone takes its dead letters' authority with it
    env_gone = {**cli_env, "INFERLEDGER_GATEWAY_TOKENS": json.dumps({"tok-all": {"name": "all"}})}
    result = json.loads(cli(env_gone, "dlq", "replay", "--reason", "forbidden").stdout)
    assert result["sent"] == 0 and result["skipped_by_reason"] == {"unknown_credential": 2}
    cli(cli_env, "run", "all", "--until-idle")
    assert counted(settings.database_url) == {"ok-1", "denied-1", "denied-2"}
    cli(cli_env, "audit")

    proc.terminate()
    proc.wait(30)
    assert proc.stderr is not None
    logged = proc.stderr.read().decode()
    assert not any(token in logged for token in [*TOKENS, "tok-nope"]), logged
