"""Defect 6 (the core of it): ``dlq replay`` authorizes what the gateway dead-lettered again,
under the current gateway tokens, and refuses what was unauthenticated or is forbidden, unless
the operator names it and lifts that explicitly. No broker needed: dry runs send nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.ingest import dlq
from services.ingest.gateway import credential_id
from services.runtime.config import Settings
from services.runtime.kafka import dead_letter

TOKENS = {"tok-all": {"name": "all"}, "tok-node2": {"name": "node-2 only", "resources": ["node-2"]}}


def event(event_id: str, resource: str = "node-1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tenant_id": "acme",
        "resource_id": resource,
        "model": "m",
        "engine": "vllm",
        "started_at": "2024-01-01T00:00:00Z",
        "finished_at": "2024-01-01T00:00:20Z",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "status": "ok",
    }


def letter(
    offset: int, reason: str, payload: Any, token: str | None, source: str = "gateway"
) -> dlq.DeadLetter:
    creds: dict[str, Any] = {}
    if token is not None:
        creds = {"credential": "x", "credential_id": credential_id(token)}
    raw = dead_letter(
        "p.inference-events", reason, "d", json.dumps(payload), 65536, source=source, **creds
    )
    return dlq.DeadLetter("p.inference-events.dlq", 0, offset, json.loads(raw))


@pytest.fixture
def settings() -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="p.", gateway_tokens=TOKENS)


LETTERS = [
    letter(0, "missing_token", event("anon"), None),  # what older gateways dead-lettered
    letter(1, "invalid_token", event("wrong"), None),
    letter(2, "forbidden", event("denied"), "tok-node2"),  # still out of the token's scope
    letter(3, "forbidden", event("widened", "node-2"), "tok-node2"),  # scope since widened
    letter(4, "invalid_event", event("revoked"), "tok-revoked"),  # token no longer configured
    letter(5, "forbidden", event("no-credential"), None),
    letter(6, "too_late", event("processor"), None, source="attribution"),
    letter(7, "invalid_event", event("by-all"), "tok-all"),
]


def test_replay_refuses_what_the_gateway_would_refuse_now(settings: Settings) -> None:
    result = dlq.send(settings, dlq.from_records(LETTERS), dry_run=True)
    assert result.sent == 3  # widened, processor, by-all
    assert dict(result.skipped) == {"unauthenticated": 3, "forbidden": 1, "unknown_credential": 1}
    problems = "\n".join(result.problems)
    assert "p.inference-events.dlq:0:2: forbidden" in problems
    assert "tok-" not in problems  # names and ids only


def test_the_operator_may_name_refused_dead_letters_and_send_them(settings: Settings) -> None:
    named = [d for d in LETTERS if d.dlq_offset in (0, 2)]
    result = dlq.send(settings, dlq.from_records(named, override=True), dry_run=True)
    assert result.sent == 2 and result.overridden == 2
    assert result.as_dict()["sent_unauthorized"] == 2
    # without the override, the same two stay refused
    assert dlq.send(settings, dlq.from_records(named), dry_run=True).sent == 0


def test_a_fixed_file_is_authorized_again(settings: Settings, tmp_path: Any) -> None:
    lines = [json.dumps(d.as_dict()) for d in LETTERS[:3]]
    moved = LETTERS[2].as_dict() | {"payload": event("moved", "node-2")}  # fixed by hand
    plain = json.dumps(event("plain"))  # an operator's own message: not a gateway dead letter
    path = tmp_path / "fixed.jsonl"
    path.write_text("\n".join([*lines, json.dumps(moved), plain]) + "\n")
    with path.open("rb") as stream:
        result = dlq.send(
            settings, dlq.from_file(stream, settings, "inference-events"), dry_run=True
        )
    assert result.sent == 2  # moved (now within the token's scope) and plain
    assert dict(result.skipped) == {"unauthenticated": 2, "forbidden": 1}


def test_positions(settings: Settings) -> None:
    want = ("p.inference-events.dlq", 0, 12)
    for spec in ("inference-events:0:12", "inference-events.dlq:0:12", "p.inference-events:0:12"):
        assert dlq.parse_position(settings, spec) == want
    assert dlq.parse_position(settings, "p.inference-events.dlq:0:12") == want
    with pytest.raises(ValueError):
        dlq.parse_position(settings, "inference-events@12")
