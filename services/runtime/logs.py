"""Structured logging (structlog), JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # the libraries' own logging (faust, aiokafka, kafka-python, ...) in the same format, so a
    # JSON log stays one JSON object per line
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt != "console":
        final.append(structlog.processors.format_exc_info)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[*final, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for noisy in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get(name: str) -> Any:
    return structlog.get_logger(name)


def bind(**values: Any) -> None:
    """Add these fields to every log line of this process from now on (e.g. which worker)."""
    structlog.contextvars.bind_contextvars(**values)


class Progress:
    """Logs a processor's counters every ``every`` seconds while they change."""

    def __init__(self, name: str, counters: dict[str, int], every: float = 10.0) -> None:
        import time

        self._clock = time.monotonic
        self._log = get(name)
        self._counters = counters
        self._every = every
        self._last_at = self._clock()
        self._last: dict[str, int] = {}

    def tick(self) -> None:
        now = self._clock()
        if now - self._last_at < self._every or dict(self._counters) == self._last:
            return
        self._last_at, self._last = now, dict(self._counters)
        self._log.info("progress", **self._last)
