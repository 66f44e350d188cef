"""docs/sql.md, run as written: its set-up commands through the CLI (the worked example into the
real broker and Postgres), then every ```sql block, each compared with the answer table after it,
cell by cell as Postgres prints it. A block that starts with ``-- as a login of tenant T`` runs
as a login of tenant T, made by `inferledger roles grant-tenant` (SET SESSION AUTHORIZATION: the
session's login and current user are both that role, as when it connects itself)."""

from __future__ import annotations

import re
import shlex
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg import sql as pgsql
from sqlalchemy import create_engine

from tests.helpers import Logins, cli, ledger

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sql.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
AS_TENANT = re.compile(r"\A-- as a login of tenant (\S+)\n")
VIEWS = [
    "v_cost_per_completion",
    "v_tenant_spend",
    "v_gpu_utilization",
    "v_cost_per_completion_with_idle",
    "v_budget_status",
    "v_unallocated_billing",
    "v_tenant_idle_share",
    "v_tenant_margin",
    "v_api_equivalent",
    "v_goodput",
    "v_waste",
]


def blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, end offset) of each fenced block."""
    return [(m.group(1), m.group(2), m.end()) for m in BLOCK.finditer(text)]


def answer_after(text: str, offset: int) -> list[list[str]]:
    """The Markdown table that follows a block (blank lines and one line of prose may come
    first): its header, then its rows, each a list of cells."""
    lines = text[offset:].splitlines()
    i = 0
    while i < len(lines) and not lines[i].startswith("|"):
        assert not lines[i].startswith("```"), "an sql block without its answer table"
        i += 1
    table = []
    while i < len(lines) and lines[i].startswith("|"):
        table.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    assert len(table) >= 2 and set("".join(table[1])) <= set("-: "), table
    return [table[0], *table[2:]]


def test_the_sql_doc_covers_every_view():
    text = DOC.read_text(encoding="utf-8")
    sql = [body for lang, body, _ in blocks(text) if lang == "sql"]
    for view in VIEWS:
        assert f"## `{view}`" in text, view
        assert any(view in body for body in sql), f"no example query reads {view}"


def test_every_query_of_the_sql_doc_answers_as_written(cli_env, settings, logins: Logins):
    text = DOC.read_text(encoding="utf-8")
    found = blocks(text)
    (setup,) = [body for lang, body, _ in found if lang == "bash"]
    for line in setup.splitlines():
        if line.strip():
            args = shlex.split(line)
            assert args[0] == "inferledger", line
            # paths are the repository's, wherever pytest runs from
            cli(cli_env, *(str(ROOT / a) if a.startswith("tests/") else a for a in args[1:]))
    # the worked example's ledger, untouched by the tax line
    total = sum(a for _, _, _, a, _ in ledger(settings.database_url).values())
    assert len(ledger(settings.database_url)) == 6 and total == Decimal("1.2")

    engine = create_engine(settings.database_url)
    queries = [(body, end) for lang, body, end in found if lang == "sql"]
    assert len(queries) >= len(VIEWS)
    tenant_logins: dict[str, str] = {}
    for body, _ in queries:
        if (m := AS_TENANT.match(body)) and m.group(1) not in tenant_logins:
            role = logins.name(f"doc_{m.group(1)}")
            cli(cli_env, "roles", "grant-tenant", m.group(1), role)
            tenant_logins[m.group(1)] = role
    assert tenant_logins, "the roles section has no example run as a tenant"
    try:
        raw = engine.raw_connection()
        conn = raw.driver_connection
        assert conn is not None
        conn.execute("SET TimeZone = 'UTC'")
        for sql, end in queries:
            want = answer_after(text, end)
            if m := AS_TENANT.match(sql):
                who: Any = pgsql.Identifier(tenant_logins[m.group(1)])
                conn.execute(pgsql.SQL("SET SESSION AUTHORIZATION {}").format(who))
            cur = conn.execute(sql)
            assert cur.description is not None and cur.pgresult is not None, sql
            header = [d.name for d in cur.description]
            result = cur.pgresult
            rows = [
                [
                    "NULL" if (v := result.get_value(r, c)) is None else v.decode()
                    for c in range(result.nfields)
                ]
                for r in range(result.ntuples)
            ]
            assert [header, *rows] == want, f"\n{sql}\ngot:  {[header, *rows]}\nwant: {want}"
            conn.execute("RESET SESSION AUTHORIZATION")
        raw.close()
    finally:
        engine.dispose()
