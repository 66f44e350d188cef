"""Secrets (gateway tokens, proxy API keys, the proxy's upstream key, the SASL password) are
``SecretStr``: never in a repr, a dump, a log line or a dead letter; tokens and API keys are
compared in constant time (a digest comparison against every configured one)."""

from __future__ import annotations

import hmac
import json
import logging
import sys
from typing import Any

import pytest

from services.ingest import gateway as gw
from services.ingest import proxy as px
from services.runtime import logs
from services.runtime.config import Settings
from services.runtime.kafka import dead_letter

SECRETS = {
    "gateway": "gw-token-Zq8xT3",
    "gateway2": "gw-token-Kp2mW9",
    "proxy_key": "sk-proxy-Hy7Ue4",
    "upstream": "up-key-Rb5Nc1",
    "sasl": "sasl-pass-Lw6Vd0",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Settings:
    tokens = {SECRETS["gateway"]: {"name": "cluster-a"}, SECRETS["gateway2"]: None}
    monkeypatch.setenv("INFERLEDGER_GATEWAY_TOKENS", json.dumps(tokens))
    monkeypatch.setenv("INFERLEDGER_PROXY_KEYS", json.dumps({SECRETS["proxy_key"]: "acme"}))
    monkeypatch.setenv("INFERLEDGER_PROXY_UPSTREAM_API_KEY", SECRETS["upstream"])
    monkeypatch.setenv("INFERLEDGER_KAFKA_SASL_PASSWORD", SECRETS["sasl"])
    monkeypatch.setenv(
        "INFERLEDGER_PROXY_UPSTREAMS", json.dumps([{"resource_id": "n", "url": "http://x"}])
    )
    return Settings()


def leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_settings_never_show_a_secret(env: Settings) -> None:
    shown = [
        repr(env),
        str(env),
        env.model_dump_json(),
        repr(env.model_dump()),
        json.dumps(env.model_dump(mode="json")),
        repr(env.gateway_tokens),
        repr(env.proxy_keys),
        f"{env.proxy_upstream_api_key}",
    ]
    for text in shown:
        assert leaks(text) == [], text
    # and yet they are there for the code that needs them
    assert env.kafka_security()["sasl_plain_password"] == SECRETS["sasl"]
    assert {t.get_secret_value() for t in env.gateway_tokens} == {
        SECRETS["gateway"],
        SECRETS["gateway2"],
    }


@pytest.fixture
def restore_logging():
    """Logging configured on the captured stderr must not outlive the capture (a later test
    that logs would write to a closed file)."""
    yield
    import structlog

    structlog.reset_defaults()
    logging.basicConfig(level=logging.WARNING, stream=sys.__stderr__, force=True)


def test_log_lines_never_show_a_secret(
    env: Settings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    restore_logging: None,
) -> None:
    logs.configure("DEBUG", "json")
    log = logs.get("test")
    log.info("settings", settings=env, tokens=list(env.gateway_tokens), keys=list(env.proxy_keys))
    log.error("failure", settings=repr(env), upstream_key=env.proxy_upstream_api_key)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").warning("settings %r %s", env, env)
    out = capsys.readouterr()
    text = out.err + out.out + caplog.text
    assert "settings" in text and "failure" in text
    assert leaks(text) == [], text
    gateway = gw.Gateway(env, producer=object())
    proxy = px.Proxy(env, emitter=object())  # type: ignore[arg-type]
    for thing in (gateway.grants, gateway.settings, vars(gateway), vars(proxy), proxy.keys):
        assert leaks(repr(thing)) == [], repr(thing)


def test_gateway_grants_name_tokens_without_revealing_them(env: Settings) -> None:
    creds = gw.grants(env)
    named = creds.find(SECRETS["gateway"])
    unnamed = creds.find(SECRETS["gateway2"])
    assert named is not None and unnamed is not None
    assert named.name == "cluster-a"
    assert named.id == gw.credential_id(SECRETS["gateway"]) and named.id.startswith("sha256:")
    # a token with no configured name is called by its id, not by the first characters of it
    assert unnamed.name == unnamed.id and SECRETS["gateway2"][:4] not in unnamed.name
    assert creds.by_id(named.id) is named
    assert creds.find("gw-token-Zq8xT") is None and creds.find("") is None
    record = dead_letter(
        "t",
        "forbidden",
        "x",
        {"a": 1},
        100,
        source="gateway",
        credential=named.name,
        credential_id=named.id,
    )
    assert leaks(record.decode()) == []
    assert json.loads(record)["credential_id"] == named.id


@pytest.mark.parametrize("presented", ["", "x", SECRETS["gateway"], SECRETS["gateway2"] + "x"])
def test_tokens_are_compared_in_constant_time_against_every_token(
    env: Settings, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    creds = gw.grants(env)
    creds.find(presented)
    # every configured token compared, equal-length digests, whatever matched (or not)
    assert len(calls) == 2
    assert all(len(a) == len(b) == 32 for a, b in calls)
    calls.clear()
    keys = px.ApiKeys({k.get_secret_value(): t for k, t in env.proxy_keys.items()})
    assert keys.tenant(SECRETS["proxy_key"]) == "acme"
    assert keys.tenant(presented) is None
    assert len(calls) == 2
