"""The webhook signature of DESIGN.md section 2: HMAC-SHA256(secret, timestamp + "." + body)."""

from __future__ import annotations

import hashlib
import hmac

from services.contracts import webhook

SECRET = b"s3cret"
BODY = b'{"kind":"threshold","text":"acme spent 80 % of its budget"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    want = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert webhook.sign(SECRET, 1_700_000_000, BODY) == "sha256=" + want
    # a known vector, so that receivers in other languages can check their code against it
    assert webhook.sign(b"key", 0, b"") == (
        "sha256=" + hmac.new(b"key", b"0.", hashlib.sha256).hexdigest()
    )


def test_verify_accepts_the_signature_and_refuses_any_change():
    sig = webhook.sign(SECRET, 1_700_000_000, BODY)
    ok = dict(tolerance_seconds=300, now=1_700_000_100)
    assert webhook.verify(SECRET, 1_700_000_000, BODY, sig, **ok)
    assert webhook.verify(SECRET, "1700000000", BODY, sig, **ok)  # the header's text
    assert not webhook.verify(b"other", 1_700_000_000, BODY, sig, **ok)
    assert not webhook.verify(SECRET, 1_700_000_001, BODY, sig, **ok)
    assert not webhook.verify(SECRET, 1_700_000_000, BODY + b" ", sig, **ok)
    assert not webhook.verify(SECRET, 1_700_000_000, BODY, sig.replace("sha256=", "sha1="), **ok)
    assert not webhook.verify(SECRET, 1_700_000_000, BODY, "", **ok)
    assert not webhook.verify(SECRET, "not a number", BODY, sig, **ok)
    assert not webhook.verify(SECRET, 1_700_000_000, BODY, "sha256=é", **ok)


def test_verify_refuses_an_old_or_future_timestamp_unless_told_not_to_check():
    sig = webhook.sign(SECRET, 1_700_000_000, BODY)
    assert not webhook.verify(SECRET, 1_700_000_000, BODY, sig, now=1_700_000_301)
    assert not webhook.verify(SECRET, 1_700_000_000, BODY, sig, now=1_699_999_699)
    assert webhook.verify(SECRET, 1_700_000_000, BODY, sig, tolerance_seconds=None)


def test_headers_carry_the_timestamp_that_was_signed():
    h = webhook.headers(SECRET, BODY, timestamp=1_700_000_000)
    assert h["Content-Type"] == "application/json"
    assert h[webhook.TIMESTAMP_HEADER] == "1700000000"
    assert webhook.verify(
        SECRET, h[webhook.TIMESTAMP_HEADER], BODY, h[webhook.SIGNATURE_HEADER],
        tolerance_seconds=None,
    )  # fmt: skip
    fresh = webhook.headers(SECRET, BODY)
    assert webhook.verify(SECRET, fresh[webhook.TIMESTAMP_HEADER], BODY,
                          fresh[webhook.SIGNATURE_HEADER])  # fmt: skip


def test_a_budget_alert_round_trips_with_text_baseline_and_observed():
    import pytest
    from pydantic import ValidationError

    from services.contracts import BudgetAlert

    raw = {
        "alert_id": "a1", "budget_id": "b1", "tenant_id": None, "kind": "anomaly",
        "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z",
        "spend": "-1.5", "budget": "100", "currency": "USD", "model": "llama-70b",
        "baseline": "0.000120", "observed": "0.000480", "fired_at": "2026-11-30T10:00:00Z",
        "text": "all tenants: cost per completion of llama-70b is 4x its baseline",
    }  # fmt: skip
    alert = BudgetAlert.model_validate(raw)
    again = BudgetAlert.model_validate_json(alert.model_dump_json())
    assert again == alert and again.observed is not None and str(again.observed) == "0.000480"
    assert '"baseline":"0.000120"' in alert.model_dump_json()
    with pytest.raises(ValidationError):
        BudgetAlert.model_validate({**raw, "text": ""})
    with pytest.raises(ValidationError):
        BudgetAlert.model_validate({k: v for k, v in raw.items() if k != "text"})
