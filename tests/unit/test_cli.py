"""The CLI's rough edges, without services: version, unreadable inputs, no throwaway broker."""

from __future__ import annotations

from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from services.cli.main import cli


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """A runner with no broker configured and no `inferledger up` (an empty data folder)."""
    monkeypatch.chdir(tmp_path)
    return CliRunner(
        env={
            "INFERLEDGER_KAFKA_BOOTSTRAP": None,
            "INFERLEDGER_DATABASE_URL": None,
            "INFERLEDGER_DATA_DIR": str(tmp_path / "embedded"),
        }
    )


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"inferledger, version {version('inferledger')}"


@pytest.mark.parametrize("command", [["events"], ["rates"], ["billing"]])
def test_ingest_of_a_missing_file_is_a_one_line_error(runner, command):
    result = runner.invoke(cli, ["ingest", *command, "nosuch.jsonl"])
    assert result.exit_code != 0
    assert result.output.strip() == ("Error: cannot read nosuch.jsonl: No such file or directory")
    assert not isinstance(result.exception, FileNotFoundError)  # no traceback


def test_ingest_of_a_directory_is_a_one_line_error(runner, tmp_path):
    result = runner.invoke(cli, ["ingest", "events", str(tmp_path)])
    assert result.exit_code != 0
    assert result.output.strip() == f"Error: {tmp_path} is a directory, not a file"


@pytest.mark.parametrize(
    "args", [["run"], ["run", "all", "--until-idle"], ["run", "attribution"], ["dlq", "list"]]
)
def test_commands_that_need_the_pipelines_broker_refuse_a_throwaway_one(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "./dev up" in lines[0] and "INFERLEDGER_KAFKA_BOOTSTRAP" in lines[0]


def test_dlq_replay_refuses_without_a_broker_unless_only_validating_a_file(runner, tmp_path):
    result = runner.invoke(cli, ["dlq", "replay", "--all"])
    assert result.exit_code == 1 and "./dev up" in result.output
    missing = runner.invoke(cli, ["dlq", "replay", "--from-file", "nosuch.jsonl", "--dry-run"])
    assert missing.exit_code != 0
    assert "cannot read nosuch.jsonl" in missing.output


def subcommands(name: str) -> set[str]:
    group = cli.commands[name]
    assert isinstance(group, click.Group), name
    return set(group.commands)


def test_every_command_is_still_there():
    assert set(cli.commands) == {
        "audit",
        "budget",
        "demo",
        "dlq",
        "export",
        "gateway",
        "ingest",
        "migrate",
        "proxy",
        "replay",
        "report",
        "roles",
        "run",
        "top",
        "up",
    }
    assert subcommands("ingest") == {"events", "rates", "billing", "prices"}
    assert subcommands("replay") == {"fleet", "azure-trace"}
    assert subcommands("dlq") == {"list", "replay"}
    assert subcommands("export") == {"focus"}
    assert subcommands("budget") == {"set", "list", "delete", "test-webhook"}
    assert subcommands("roles") == {
        "grant-tenant",
        "grant-reader",
        "grant-writer",
        "revoke",
        "list",
    }
