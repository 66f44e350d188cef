"""`inferledger roles`: which role names and tenants are refused before any SQL, and where a
password may come from (no database needed)."""

from __future__ import annotations

import click
import pytest

from services.cli.roles import password_of
from services.ledger.roles import RoleError, check_role_name, check_tenant


@pytest.mark.parametrize(
    "name",
    [
        "postgres",
        "POSTGRES",
        "public",
        "none",
        "current_user",
        "session_user",
        "pg_monitor",
        "pg_anything",
        "inferledger_reader",
        "inferledger_tenant",
        "inferledger_writer",
        "Inferledger_future_group",
    ],
)
def test_reserved_names_are_refused(name):
    with pytest.raises(RoleError, match="is reserved"):
        check_role_name(name)


@pytest.mark.parametrize(
    "name",
    ["", " ", " lead", "trail ", "new\nline", "tab\there", "nul\x00", "bidi\u202e", "é" * 32],
)
def test_empty_spaced_control_or_too_long_names_are_refused(name):
    with pytest.raises(RoleError):
        check_role_name(name)


@pytest.mark.parametrize(
    "name", ["acme_dashboard", "Acme Dashboard", "q\"'; DROP ROLE x; --", "ü" * 31, "a" * 63]
)
def test_anything_else_is_a_name_and_is_quoted_later(name):
    assert check_role_name(name) == name


@pytest.mark.parametrize("tenant", ["", " acme", "acme\n", "bell\x07", "x" * 129])
def test_bad_tenants_are_refused(tenant):
    with pytest.raises(RoleError):
        check_tenant(tenant)


def test_a_password_comes_from_at_most_one_place(monkeypatch, capsys):
    monkeypatch.setenv("ROLE_PW", "from env")
    monkeypatch.delenv("UNSET_PW", raising=False)
    assert password_of(None, None, False) is None
    assert password_of(None, "ROLE_PW", False) == "from env"
    with pytest.raises(click.UsageError, match="at most one"):
        password_of("x", "ROLE_PW", False)
    with pytest.raises(click.UsageError, match="at most one"):
        password_of(None, "ROLE_PW", True)
    with pytest.raises(click.ClickException, match=r"\$UNSET_PW is not set"):
        password_of(None, "UNSET_PW", False)
    with pytest.raises(click.ClickException, match="must not be empty"):
        password_of("", None, False)
    assert password_of("on argv", None, False) == "on argv"
    assert "visible to other users" in capsys.readouterr().err
