"""The accounting core's settings come from the runtime's plain ``INFERLEDGER_*`` values."""

from __future__ import annotations

from decimal import Decimal

from services.accounting import AccountingSettings, TokenWeights
from services.attribution.settings import accounting_settings
from services.runtime.config import load_settings


def test_defaults_are_the_cores():
    assert accounting_settings(load_settings()) == AccountingSettings()


def test_environment_knobs_reach_the_core(monkeypatch):
    monkeypatch.setenv("INFERLEDGER_BUCKET_SECONDS", "300")
    monkeypatch.setenv("INFERLEDGER_ALLOWED_LATENESS_SECONDS", "30")
    monkeypatch.setenv("INFERLEDGER_DEFAULT_CURRENCY", "EUR")
    monkeypatch.setenv("INFERLEDGER_RESIDENT_SECONDS", "600")
    monkeypatch.setenv(
        "INFERLEDGER_TOKEN_WEIGHTS",
        '{"*": {"prompt": "2"}, "llama-70b": {"prompt": "1", "cached": "0.1", "completion": "4"}}',
    )
    settings = load_settings()
    assert settings.token_weights["*"] == {"prompt": Decimal("2")}  # plain values in runtime
    cfg = accounting_settings(settings)
    assert cfg.bucket_seconds == 300 and cfg.allowed_lateness_seconds == 30
    assert cfg.default_currency == "EUR" and cfg.resident_seconds == 600
    assert cfg.default_weights == TokenWeights(prompt=Decimal("2"))
    assert cfg.model_weights == {
        "llama-70b": TokenWeights(Decimal("1"), Decimal("0.1"), Decimal("4"))
    }
