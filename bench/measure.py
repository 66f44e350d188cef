"""Measuring the processes of a benchmark run from outside: peak and resident memory, CPU
seconds (the processors, the broker, Postgres, the whole machine), py-spy samples and where
they fall, and the machine itself."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory(threading.Thread):
    """Polls VmHWM (peak resident set) of a process tree's processes, by command; with
    ``profile_dir``, starts a py-spy sampler on each of them as it appears."""

    def __init__(self, root_pid: int, profile_dir: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peaks: dict[str, int] = {}
        self.stop = threading.Event()
        self.profile_dir = profile_dir
        self.samplers: dict[str, subprocess.Popen[bytes]] = {}
        self.cpu_seconds: dict[str, float] = {}
        # (wall time, CPU seconds so far) every 0.2 s: the processors, the broker, Postgres
        self.cpu_series: dict[str, list[tuple[float, float]]] = {}
        self.rss: dict[str, list[int]] = {}  # VmRSS samples (kB), every 0.2 s

    def rss_by_tenth(self) -> dict[str, list[float]]:
        """Each process's largest resident set in each tenth of its run (MB): flat when
        memory does not grow with the events processed."""
        out = {}
        for name, samples in self.rss.items():
            n = len(samples)
            if n < 10:
                continue
            out[name] = [
                round(max(samples[i * n // 10 : (i + 1) * n // 10]) / 1024, 1) for i in range(10)
            ]
        return out

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            now = time.time()
            for name, used in service_cpu_seconds().items():
                self.cpu_series.setdefault(name, []).append((now, used))
            for pid, name in self._tree():
                if self.profile_dir is not None and name not in self.samplers:
                    self.samplers[name] = sample(pid, self.profile_dir / f"{name}.txt")
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu_seconds[name] = (int(fields[11]) + int(fields[12])) / tick
                    self.cpu_series.setdefault(name, []).append((now, self.cpu_seconds[name]))
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            kb = int(line.split()[1])
                            self.peaks[name] = max(self.peaks.get(name, 0), kb)
                        elif line.startswith("VmRSS:"):
                            self.rss.setdefault(name, []).append(int(line.split()[1]))
                except OSError:
                    pass
            self.stop.wait(0.2)

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each process used from ``start`` to ``end`` (wall clock), from the
        samples just before and just after (so slightly more, never less)."""
        out = {}
        for name, series in self.cpu_series.items():
            before = [c for t, c in series if t <= start] or [series[0][1]]
            after = [c for t, c in series if t >= end] or [series[-1][1]]
            out[name] = round(after[0] - before[-1], 1)
        return out

    def _tree(self) -> list[tuple[int, str]]:
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if ppid == self.root_pid and b"run" in cmd:
                which = cmd[cmd.index(b"run") + 1].decode() if b"run" in cmd else "?"
                if b"--worker" in cmd[:-1]:  # one of several attribution workers
                    which += "-" + cmd[cmd.index(b"--worker") + 1].decode()
                out.append((int(entry.name), which))
        return out


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes: broker and Postgres too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the broker's and Postgres's processes on this machine.

    Postgres backends that exit count through the postmaster's children times, so the
    difference of two readings is what they used in between. A broker or Postgres on another
    machine reads as 0."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"broker": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        f = stat.rsplit(")", 1)[1].split()
        used = sum(int(x) for x in f[11:15]) / tick  # utime, stime, cutime, cstime
        if comm == "postgres":
            out["postgres"] += used
        elif b"broker" in cmd and b"--listener-url" in cmd:
            out["broker"] += used
    return out


def sample(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy at 100 Hz on ``pid`` until it exits (non-blocking: the process is not paused)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(out)]
    return subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL)


AREAS = [  # the first rule matching a frame, innermost frame first, names the sample's area
    ("postgres", ("sqlalchemy", "psycopg", "services/ledger/db.py", "attribution/state.py")),
    ("decode", ("pydantic", "services/contracts", "/json/")),
    ("accounting", ("services/accounting",)),
    ("kafka", ("aiokafka", "/kafka/", "faust/transport")),
    ("processor glue", ("services/",)),
    ("faust and asyncio", ("faust/", "mode/", "asyncio", "selectors.py", "concurrent/")),
]


def profile_shares(path: Path) -> dict[str, float]:
    """Share of a process's busy samples (py-spy, idle excluded) by area."""
    if not path.exists():
        return {}
    areas: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        area = next(
            (a for f in reversed(frames) for a, keys in AREAS if any(k in f for k in keys)),
            "other",
        )
        areas[area] = areas.get(area, 0) + int(count)
    total = sum(areas.values())
    return {a: round(n / total, 3) for a, n in sorted(areas.items())} if total else {}


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }
