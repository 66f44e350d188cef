"""The README's hand-fed worked example, run as a newcomer runs it: its own commands, through
``./dev``, once against servers named by the exported variables and once beside a running
``./dev up`` (without those variables), each printing the worked example's numbers.

The two ``export`` lines name a user's own servers; here they name the test's broker and
database (tests create and drop only databases of their own).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# the worked example's costs per completion (DESIGN.md section 3: 0.277992277992,
# 0.083397683398, 0.138610038610), as `report`'s table prints them: 6 significant digits
NUMBERS = ("0.277992", "0.0833977", "0.138610")


def first_screen() -> list[str]:
    """The commands of the README's first bash block ("Two commands, on a fresh machine")."""
    block = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def hand_fed_block() -> list[str]:
    """The README's bash block that feeds the worked example by hand."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "worked_example_events.jsonl" in b]
    return [line for line in block.splitlines() if line.strip()]


def run(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (
        f"`{line}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def user_env(cli_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in cli_env.items() if not k.startswith("INFERLEDGER_")}
    env["COLUMNS"] = "200"  # a wide terminal: the table's numbers are not shortened
    return env


def test_the_first_screens_demo_runs_as_written(empty_db_url, tmp_path):
    """`./dev demo` as the README's first screen gives it (`./dev test` is CI itself), on a
    database of the test's own (the demo would otherwise recreate inferledger_demo)."""
    assert first_screen() == ["./dev demo", "./dev test"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERLEDGER_")}
    env.update(
        INFERLEDGER_DATABASE_URL=empty_db_url, INFERLEDGER_DATA_DIR=str(tmp_path / "embedded")
    )
    out = run(first_screen()[0], env).stdout  # writes reports/ in the checkout (ignored by git)
    assert "cost per completion, per tenant and model" in out
    assert "audit: passed" in out


def test_the_block_is_the_one_the_readme_promises():
    lines = hand_fed_block()
    commands = [shlex.split(line) for line in lines if not line.startswith("export ")]
    assert [c[:2] for c in commands] == [
        ["./dev", "migrate"],
        ["./dev", "ingest"],
        ["./dev", "ingest"],
        ["./dev", "run"],
        ["./dev", "report"],
    ]


def test_hand_fed_path_against_named_servers(cli_env, settings):
    env = user_env(cli_env)
    env["INFERLEDGER_TOPIC_PREFIX"] = settings.topic_prefix  # the test's own topics
    out = ""
    for line in hand_fed_block():
        if line.startswith("export "):  # the user's servers: here the test's
            name = line.split()[1].split("=")[0]
            env[name] = cli_env[name]
            continue
        out = run(line, env).stdout
    for number in NUMBERS:
        assert number in out, out


@pytest.mark.timeout(300)
def test_hand_fed_path_beside_a_running_up(cli_env, settings, tmp_path):
    env = user_env(cli_env)
    env["INFERLEDGER_DATA_DIR"] = str(tmp_path / "embedded")
    up = subprocess.Popen(
        ["./dev", "up"],
        cwd=ROOT,
        env=dict(env, INFERLEDGER_DATABASE_URL=cli_env["INFERLEDGER_DATABASE_URL"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        state = tmp_path / "embedded" / "stack.json"
        deadline = time.monotonic() + 120
        while not state.exists():
            assert up.poll() is None, up.communicate()[0]
            assert time.monotonic() < deadline, "`./dev up` did not come up"
            time.sleep(0.2)
        started = time.monotonic()
        done = {}
        for line in hand_fed_block():
            if not line.startswith("export "):  # "without those variables": up's stack
                done[line.split()[1]] = run(line, env)
        assert "to close everything fed so far" in done["run"].stderr
        for number in NUMBERS:
            assert number in done["report"].stdout, done["report"].stdout
        assert time.monotonic() - started < 120
        # a second set of processors would join up's consumer groups: refused at once
        refused = subprocess.run(
            ["./dev", "run", "attribution"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode != 0 and "already runs the processors" in refused.stderr
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        log, _ = up.communicate(timeout=60)
    assert up.returncode == 0, log
