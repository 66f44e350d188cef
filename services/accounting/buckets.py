"""Bucket bounds, and what a request brings to a bucket: the buckets it touches and its work."""

from __future__ import annotations

import functools
from decimal import Decimal

from services.accounting.facts import to_nanos
from services.accounting.model import CONTEXT, AccountingSettings, Request, TokenWeights


def bucket_floor(t_us: int, bucket_us: int) -> int:
    return (t_us // bucket_us) * bucket_us


def bucket_ceil(t_us: int, bucket_us: int) -> int:
    return -((-t_us) // bucket_us) * bucket_us


def request_work(req: Request, settings: AccountingSettings) -> Decimal:
    """Work units of a request: weighted tokens times the GPUs its replica spans."""
    w = settings.weights_for(req.model)
    uncached = req.prompt_tokens - req.cached_prompt_tokens
    c = CONTEXT  # exact: token counts times weights with few digits, far below 60 digits
    tokens = c.add(
        c.add(c.multiply(w.prompt, uncached), c.multiply(w.cached, req.cached_prompt_tokens)),
        c.multiply(w.completion, req.completion_tokens),
    )
    return c.multiply(tokens, req.gpu_count)


@functools.lru_cache(maxsize=256)
def nano_weights(w: TokenWeights) -> tuple[int, int, int]:
    """Token weights in integer nano work units."""
    return to_nanos(w.prompt), to_nanos(w.cached), to_nanos(w.completion)


def request_work_nanos(req: Request, settings: AccountingSettings) -> int:
    """:func:`request_work` in integer nano work units (the per-event path)."""
    return work_nanos(req, nano_weights(settings.weights_for(req.model)))


def work_nanos(req: Request, weights: tuple[int, int, int]) -> int:
    """A request's work in nano units, given its model's :func:`nano_weights`."""
    p, c, o = weights
    cached = req.cached_prompt_tokens
    return (
        p * (req.prompt_tokens - cached) + c * cached + o * req.completion_tokens
    ) * req.gpu_count


def request_buckets(req: Request, bucket_us: int) -> range:
    """Starts of the buckets a request's cost or counts touch."""
    first = bucket_floor(req.start_us, bucket_us)
    last = bucket_floor(req.end_us, bucket_us)  # cost ends there or before; counts go there
    return range(first, last + bucket_us, bucket_us)
