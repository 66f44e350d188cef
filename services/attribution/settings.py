"""The accounting core's settings, built from the runtime's plain ``INFERLEDGER_*`` settings.

The runtime settings carry the accounting knobs as plain values (bucket width, lateness,
horizons, ``token_weights`` as a JSON object of decimals); this is the one place that turns them
into :class:`~services.accounting.AccountingSettings` and
:class:`~services.accounting.TokenWeights`.
"""

from __future__ import annotations

from decimal import Decimal

from services.accounting import AccountingSettings, Slo, TokenWeights
from services.accounting.model import US_PER_SECOND
from services.runtime.config import Settings


def token_weights(settings: Settings) -> tuple[TokenWeights, dict[str, TokenWeights]]:
    """The default weights (the ``"*"`` key, else the core's default) and those per model."""
    weights = {
        model: TokenWeights(**{k: Decimal(str(v)) for k, v in w.items()})
        for model, w in settings.token_weights.items()
    }
    return weights.pop("*", TokenWeights()), weights


def accounting_settings(settings: Settings) -> AccountingSettings:
    """What the :class:`~services.accounting.Book` (and the audit) account with."""
    default, per_model = token_weights(settings)
    return AccountingSettings(
        bucket_seconds=settings.bucket_seconds,
        allowed_lateness_seconds=settings.allowed_lateness_seconds,
        default_weights=default,
        model_weights=per_model,
        default_currency=settings.default_currency,
        late_horizon_seconds=settings.late_horizon_seconds,
        billing_horizon_seconds=settings.billing_horizon_seconds,
        resident_seconds=settings.resident_seconds,
        slos=slos(settings),
    )


def slos(settings: Settings) -> dict[str, Slo]:
    """``INFERLEDGER_SLOS`` as the core's objectives (seconds to whole microseconds)."""

    def us(seconds: float | None) -> int | None:
        return None if seconds is None else round(Decimal(str(seconds)) * US_PER_SECOND)

    return {
        model: Slo(us(o.get("ttft_seconds")), us(o.get("tpot_seconds")))
        for model, o in settings.slos.items()
    }
