"""`inferledger report` says why it has nothing to show, instead of a bare "(no rows)" or an
SQL traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def report(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "report"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_unmigrated_database_is_a_one_line_error(empty_db_url):
    out = report(dict(os.environ, INFERLEDGER_DATABASE_URL=empty_db_url))
    assert out.returncode == 1
    assert "no ledger yet: run `inferledger migrate`" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_empty_ledger_says_how_buckets_close(db_url):
    out = report(dict(os.environ, INFERLEDGER_DATABASE_URL=db_url))
    assert out.returncode == 0, out.stderr
    assert "(no rows)" in out.stdout
    assert "run all --until-idle` closes everything fed so far" in out.stderr


def test_audit_and_a_follow_on_an_unmigrated_database_are_one_line_errors(
    empty_db_url, kafka_bootstrap
):
    env = dict(
        os.environ,
        INFERLEDGER_DATABASE_URL=empty_db_url,
        INFERLEDGER_KAFKA_BOOTSTRAP=kafka_bootstrap,
    )
    for args in (
        ["audit", "--skip-topics"],
        ["run", "all", "--until-idle", "--follow", "--timeout", "5"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 1, (args, out.stderr)
        assert "no ledger yet: run `inferledger migrate`" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_migrate_says_what_it_did_and_a_missing_database_is_a_one_line_error(empty_db_url):
    def migrate(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", "migrate"],
            env=dict(os.environ, INFERLEDGER_DATABASE_URL=url),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    first = migrate(empty_db_url)
    assert first.returncode == 0 and "migrated the database from nothing to" in first.stdout
    again = migrate(empty_db_url)
    assert again.returncode == 0 and "at the latest revision already" in again.stdout
    gone = migrate(empty_db_url.rsplit("/", 1)[0] + "/il_test_no_such_database")
    assert gone.returncode == 1 and "cannot use the database" in gone.stderr
    assert 'database "il_test_no_such_database" does not exist' in gone.stderr
    assert "Traceback" not in gone.stderr
