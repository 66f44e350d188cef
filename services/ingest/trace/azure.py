"""The Azure LLM inference trace 2023 (CSV): reading it, row by row.

The trace (CC BY 4.0, see ``data/ATTRIBUTION.md``) has one row per request: ``TIMESTAMP``
(UTC, no offset, 7 fractional digits), ``ContextTokens`` and ``GeneratedTokens``. The code
trace of 2023-11-16 ships in ``data/`` as :data:`TRACE`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

TRACE = Path(__file__).parent / "data" / "azure-llm-inference-trace-2023-code.csv"


def parse_trace_time(text: str) -> datetime:
    """Trace timestamps are UTC without an offset and with 7 fractional digits."""
    base, _, frac = text.strip().partition(".")
    ts = datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return ts + timedelta(microseconds=int((frac + "000000")[:6]))


class TraceError(ValueError):
    """A trace file that cannot be read, with the line it failed on."""


def read_trace(path: Path = TRACE, limit: int | None = None) -> Iterator[tuple[datetime, int, int]]:
    """Rows of an Azure LLM inference trace CSV: (arrival, prompt tokens, completion tokens)."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{path}: not an Azure LLM trace, missing columns {sorted(missing)}")
        for n, row in enumerate(reader):
            if limit is not None and n >= limit:
                return
            try:
                prompt, completion = int(row["ContextTokens"]), int(row["GeneratedTokens"])
                if prompt < 0 or completion < 0:
                    raise ValueError("negative token count")
                yield parse_trace_time(row["TIMESTAMP"]), prompt, completion
            except (ValueError, TypeError) as exc:
                raise TraceError(f"{path}, line {n + 2}: {exc}") from None
