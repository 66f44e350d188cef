"""Latency objectives and the class of a request (goodput and waste; issue 18, part 2).

A request is in exactly one class, decided once from the event alone (so it is the same in every
bucket its cost spans, whatever order events arrive in):

- ``WITHIN`` (0): ``status = ok`` and within its model's objective (goodput);
- ``SLO_MISS`` (1): ``status = ok`` but outside its objective;
- ``FAILED`` (2): ``status = error``;
- ``CANCELLED`` (3): ``status = cancelled``.

Objective of a model: time to first token ``TTFT = first_token_at - started_at`` at most
``ttft_us``, and time per output token ``TPOT = (finished_at - first_token_at) /
max(completion_tokens - 1, 1)`` at most ``tpot_us`` (the first token's time is TTFT's, so the
other ``completion_tokens - 1`` tokens share the decode time; a request of 0 or 1 completion
token divides by 1). Either limit may be absent (not checked). Both comparisons are exact
(integer microseconds: ``TPOT <= tpot`` is ``decode_us <= tpot_us * max(n - 1, 1)``).

Decisions:
- A model with no objective (and no ``*`` default) has nothing to miss: its ok requests are
  within objective (``goodput = completions``).
- An event without ``first_token_at`` is judged by the bound its timestamps give: the first
  token came no later than ``finished_at``, so TTFT is taken as ``finished_at - started_at``
  (and TPOT as 0). A request that finished within the TTFT objective met it; one that did not
  is a miss (conservative: unproven latency is not counted as goodput).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.accounting.model import AccountingSettings, Request

WITHIN, SLO_MISS, FAILED, CANCELLED = 0, 1, 2, 3
CLASSES = ("within_slo", "slo_miss", "failed", "cancelled")


@dataclass(frozen=True)
class Slo:
    """A latency objective: microseconds, None for a limit that is not checked."""

    ttft_us: int | None = None
    tpot_us: int | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_us", "tpot_us"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must not be negative")


def within(slo: Slo | None, req: Request) -> bool:
    """Whether an ok request met ``slo`` (True when there is no objective)."""
    if slo is None:
        return True
    first = req.first_token_us
    if first is None:
        first = req.end_us
    if slo.ttft_us is not None and first - req.start_us > slo.ttft_us:
        return False
    if slo.tpot_us is not None:
        tokens = req.completion_tokens - 1
        if req.end_us - first > slo.tpot_us * (tokens if tokens > 1 else 1):
            return False
    return True


def request_class(req: Request, slos: dict[str, Slo], default: Slo | None = None) -> int:
    """The class of a request (module docstring) under per-model objectives."""
    status = req.status
    if status == "ok":
        return WITHIN if within(slos.get(req.model, default), req) else SLO_MISS
    return CANCELLED if status == "cancelled" else FAILED


def slo_class(settings: AccountingSettings, req: Request) -> int:
    """The class of a request under the settings' objectives (``*``: the default)."""
    return request_class(req, settings.slos, settings.slos.get("*"))
