"""Process supervision: the processors as child processes, or one of them in this process.

``inferledger run all`` and ``inferledger up`` start the attribution processor (one or more
workers in one consumer group: ``INFERLEDGER_ATTRIBUTION_WORKERS``) and the ledger writer as
child processes (the CLI's ``run attribution`` and ``run ledger``) and wait for them: until
they finish a bounded run, one fails, or a signal stops them. What a processor is
comes from its caller (a ``build`` function); the progress line shown on a terminal comes from a
callable too, so this module knows neither the accounting nor the ledger.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from services.runtime import logs
from services.runtime.config import BILLING, EVENTS, PRICES, RATES, Settings, component_listens

log = logs.get(__name__)

#: builds a processor's app, and the event set once a bounded run (``run_id``) is done
Build = Callable[[Settings, str | None], tuple[Any, asyncio.Event]]
#: the processors of ``run all``, in the order of their metrics ports
COMPONENTS = ("attribution", "ledger", "alerts")
#: the command line that runs one component: ``<CLI> run <component> [--until-idle ...]``
CLI = (sys.executable, "-m", "services.cli.main")


class ProcessFailed(RuntimeError):
    """A supervised processor exited with an error."""


def input_topics(settings: Settings) -> list[str]:
    """The topics a bounded run reads to their end: events, rates, bills and prices."""
    return [
        settings.topic(EVENTS),
        settings.topic(RATES),
        settings.topic(BILLING),
        settings.topic(PRICES),
    ]


def begin_bounded_run(settings: Settings) -> tuple[str, dict[int, int]]:
    """A new run id, its end-of-input markers written to every input partition; and the offset
    of its marker on each events partition. An attribution worker that takes an events
    partition over from another decides from the partition's committed offset whether its input
    up to the marker is accounted for already (see AttributionProcessor.taken_over)."""
    from services.runtime.kafka import ensure_topics, publish_end_markers

    ensure_topics(settings)  # idempotent
    run_id = uuid.uuid4().hex
    offsets = publish_end_markers(settings, input_topics(settings), run_id)
    events = settings.topic(EVENTS)
    return run_id, {p: o for (t, p), o in offsets.items() if t == events}


def start_bounded_run(settings: Settings) -> str:
    """A new run id, its end-of-input markers written to every input partition."""
    return begin_bounded_run(settings)[0]


def format_marker_offsets(offsets: dict[int, int]) -> str:
    """``{partition: offset}`` as ``run --run-markers`` takes it: ``0:12,1:40``."""
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def parse_marker_offsets(text: str) -> dict[int, int]:
    """The inverse of :func:`format_marker_offsets` (ValueError on anything else)."""
    out = {}
    for item in filter(None, text.split(",")):
        p, _, o = item.partition(":")
        if int(p) < 0 or int(o) < 0:
            raise ValueError(f"a negative partition or offset: {item!r}")
        out[int(p)] = int(o)
    return out


def process_names(settings: Settings) -> list[str]:
    """The processes of ``run all`` and ``up``, in the order of their metrics ports: the
    components, then the attribution workers after the first (``attribution-2``, ...)."""
    extra = range(2, settings.attribution_workers + 1)
    return [*COMPONENTS, *(f"attribution-{k}" for k in extra)]


def run_one(
    settings: Settings, component: str, build: Build, until_idle: bool, run_id: str | None
) -> None:
    """Run one processor in this process: until stopped, or to the end of a bounded run.

    With ``metrics_listen`` it serves ``/metrics`` (the app's ``inferledger_counters``, its
    ``inferledger_collectors`` and its consumer's lag) and ``/healthz``; with ``profile_dir``
    it writes ``<component>.prof`` (cProfile)."""
    from services.runtime.faustapp import run_until, tune_gc

    app, done = build(settings, run_id)
    tune_gc(settings)
    if settings.metrics_listen:
        from services.runtime.health import HEALTH, kafka_probe, postgres_probe
        from services.runtime.metrics import serve

        if settings.database_url:
            HEALTH.add_probe("postgres", postgres_probe(settings.database_url))
        HEALTH.add_probe("kafka", kafka_probe(settings.kafka_bootstrap, settings.kafka_security()))
        from services.runtime.faustapp import lag_collector

        # the app's own families (watermarks, latency, ...) and its consumer's lag
        collectors = [*getattr(app, "inferledger_collectors", ()), lag_collector(component, app)]
        serve(settings.metrics_listen, component, app.inferledger_counters, collectors=collectors)
        log.info("metrics listening", listen=settings.metrics_listen, component=component)
    if settings.profile_dir is None:
        asyncio.run(run_until(app, done if until_idle else None))
        return
    import cProfile

    settings.profile_dir.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(run_until(app, done if until_idle else None))
    finally:
        profiler.disable()
        profiler.dump_stats(str(settings.profile_dir / f"{component}.prof"))


def run_processors(
    settings: Settings,
    until_idle: bool,
    progress: Callable[[Settings], str] | None = None,
    cli: Sequence[str] = CLI,
    max_restarts: int = 10,
    restart_window: float = 300.0,
) -> None:
    """Run the attribution processor (``settings.attribution_workers`` workers) and the ledger
    writer as child processes and wait.

    Bounded when ``until_idle`` (a new run id, its end markers written first): a processor that
    exits with an error fails the run (:class:`ProcessFailed`; the other is then stopped).
    Streaming, a processor that exits for any reason (a crash, a kill) is started again after a
    backoff of 1 s doubling to 30 s, as a container's restart policy would; a processor
    restarted ``max_restarts`` times in ``restart_window`` seconds that exits again raises
    :class:`ProcessFailed`. Nothing is
    lost by a restart: it resumes from its committed offsets and its state in Postgres. On a
    terminal, ``progress(settings)`` (e.g. "1234 ledger rows") is shown while they run."""
    from services.runtime.kafka import ensure_topics

    ensure_topics(settings)
    run_id, markers = begin_bounded_run(settings) if until_idle else (None, {})
    env = dict(os.environ)
    env["INFERLEDGER_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap or ""
    env["INFERLEDGER_DATABASE_URL"] = settings.database_url or ""
    env["INFERLEDGER_TOPIC_PREFIX"] = settings.topic_prefix
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    names = process_names(settings)
    listens = component_listens(settings.metrics_listen, names) if settings.metrics_listen else {}
    workers = settings.attribution_workers
    for name in names:
        component = name.partition("-")[0]
        cmd = [*cli, "run", component, "--supervised"]  # not a second set beside `up`
        if run_id is not None:
            cmd += ["--until-idle"]
            if component != "alerts":
                cmd += ["--run-id", run_id]
            if component == "attribution":
                cmd += ["--run-markers", format_marker_offsets(markers)]
        if component == "attribution" and workers > 1:  # names the worker in its log lines
            cmd += ["--worker", name.partition("-")[2] or "1"]
        if settings.metrics_listen:  # one port per process, in the order of names
            env["INFERLEDGER_METRICS_LISTEN"] = listens[name]
        commands[name] = (cmd, dict(env))
    # bounded, the alerts processor runs once the ledger is complete (see below)
    after = commands.pop("alerts") if run_id is not None else None
    procs = [(c, subprocess.Popen(cmd, env=e)) for c, (cmd, e) in commands.items()]
    started = time.monotonic()
    restarts: dict[str, list[float]] = {c: [] for c in commands}  # per component: when
    due: dict[int, float] = {}  # index in procs -> when to start it again
    stopped: set[str] = set()  # bounded: workers stopped because the ledger was complete

    def restart_exited() -> None:
        """Streaming: start again what exited (after its backoff), or give up."""
        now = time.monotonic()
        for i, (component, proc) in enumerate(procs):
            if proc.poll() is None:
                continue
            if i not in due:
                recent = [t for t in restarts[component] if t > now - restart_window]
                if len(recent) >= max_restarts:
                    raise ProcessFailed(
                        f"{component} exited with {proc.returncode}, and was restarted "
                        f"{len(recent)} times in {restart_window:.0f} s: giving up"
                    )
                delay = min(30.0, 2.0 ** len(recent))
                due[i] = now + delay
                log.error("processor exited; starting it again", component=component,
                          returncode=proc.returncode, in_seconds=delay)  # fmt: skip
            elif now >= due[i]:
                del due[i]
                restarts[component].append(now)
                cmd, e = commands[component]
                procs[i] = (component, subprocess.Popen(cmd, env=e))
                log.info("processor started again", component=component,
                         restarts=len(restarts[component]))  # fmt: skip

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(sig, _stop)
    try:
        status: Any = None
        if progress is not None and sys.stderr.isatty():
            from rich.console import Console

            status = Console(stderr=True).status("processing")
            status.start()
        while run_id is None or any(p.poll() is None for _, p in procs):
            if status is not None:
                status.update(
                    f"processing: {progress(settings) if progress else ''}, "
                    f"{time.monotonic() - started:.0f} s"
                )
            if run_id is None:
                restart_exited()
            elif any(p.poll() not in (None, 0) for c, p in procs if c not in stopped):
                break
            elif not stopped and any(c == "ledger" and p.poll() == 0 for c, p in procs):
                # the writer is done: the markers of the run cover every events partition, so
                # an attribution worker still running (one that never had a partition, or
                # that took some over after their markers) has nothing left to account for
                for c, p in procs:
                    if p.poll() is None:
                        log.info("stopping an attribution worker: the ledger is complete",
                                 worker=c)  # fmt: skip
                        p.terminate()
                        stopped.add(c)
            time.sleep(0.5)
        if status is not None:
            status.stop()
        failed = [
            f"{c} exited with {p.returncode}"
            for c, p in procs
            if c not in stopped and p.poll() not in (None, 0)
        ]
        if failed:
            raise ProcessFailed("; ".join(failed))
        if after is not None:  # the ledger is complete: evaluate budgets, deliver, exit
            alerts = subprocess.Popen(after[0], env=after[1])
            procs.append(("alerts", alerts))
            if alerts.wait() != 0:
                raise ProcessFailed(f"alerts exited with {alerts.returncode}")
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.terminate()
        for _, p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
