"""Login roles for the three group roles of migration 0008 (docs/sql.md#roles-and-tenant-isolation).

A login is made a member of ``inferledger_tenant`` (and bound to its tenant in
``tenant_logins``), of ``inferledger_reader`` or of ``inferledger_writer``; ``revoke`` removes
the binding and the memberships and disables the login, without dropping the role (it may own
objects, or be used in other databases of the server).

Role names and passwords come from whoever runs the command: every statement is composed with
``psycopg.sql`` (identifiers quoted, values as literals), never formatted by hand. Passwords are
hashed here (SCRAM-SHA-256, by libpq) before they reach the server, so that no statement log
holds one in clear.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql
from sqlalchemy import Engine

Kind = Literal["tenant", "reader", "writer"]
GROUPS: dict[Kind, str] = {
    "tenant": "inferledger_tenant",
    "reader": "inferledger_reader",
    "writer": "inferledger_writer",
}
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: Postgres cuts longer names silently
MAX_TENANT = 128
# Postgres' own and inferledger's group roles (and names CREATE ROLE refuses anyway)
RESERVED_PREFIXES = ("inferledger_", "pg_")
RESERVED = {"postgres", "public", "none", "current_user", "current_role", "session_user", "user"}
_LOCK = "inferledger roles"  # one role change at a time in a database


class RoleError(Exception):
    """A refusal, in one line, for the user."""


@dataclass
class Outcome:
    role: str
    kind: Kind | None = None
    tenant: str | None = None
    created: bool = False
    password_set: bool = False
    done: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.role}: " + ("; ".join(self.done) or "nothing to do")


def _printable(value: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value)


def check_role_name(name: str) -> str:
    """A login role name this command may manage, or a RoleError."""
    if not name or not name.strip() or name != name.strip() or not _printable(name):
        raise RoleError(
            f"role name {name!r}: must be non-empty, without surrounding spaces or control "
            "characters"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise RoleError(
            f"role name {name!r} is longer than {MAX_NAME_BYTES} bytes (Postgres would cut it)"
        )
    lowered = name.lower()
    if lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES):
        raise RoleError(
            f"role name {name!r} is reserved (postgres, pg_*, inferledger_* and SQL's own names)"
        )
    return name


def check_tenant(tenant: str) -> str:
    if not tenant or tenant != tenant.strip() or len(tenant) > MAX_TENANT:
        raise RoleError(
            f"tenant {tenant!r}: must be 1 to {MAX_TENANT} characters without surrounding spaces"
        )
    if not _printable(tenant):
        raise RoleError(f"tenant {tenant!r} has control characters")
    return tenant


def _driver(conn: Any) -> Any:
    """The psycopg connection under a SQLAlchemy connection (same transaction)."""
    return conn.connection.driver_connection


def _prepare(cur: Any, role: str) -> dict[str, Any] | None:
    """Lock role changes in this database, refuse the current user, check that the database is
    migrated; the role's attributes (None: no such role)."""
    cur.execute("SELECT to_regclass('tenant_logins') IS NOT NULL, current_user")
    migrated, me = cur.fetchone()
    if not migrated:
        raise RoleError(
            "this database has no roles yet: run `inferledger migrate` (as the database owner)"
        )
    if role == me:
        raise RoleError(f"{role!r} is the role running this command")
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_LOCK,))
    cur.execute(
        "SELECT oid, rolsuper, rolbypassrls, rolcreaterole, rolcanlogin "
        "FROM pg_roles WHERE rolname = %s",
        (role,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip(("oid", "super", "bypassrls", "createrole", "login"), row, strict=True))


def _member_of(cur: Any, role: str, group: str) -> bool:
    cur.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (role, group))
    return bool(cur.fetchone()[0])


def _binding(cur: Any, role: str) -> str | None:
    cur.execute("SELECT tenant_id FROM tenant_logins WHERE role_name = %s FOR UPDATE", (role,))
    row = cur.fetchone()
    return None if row is None else str(row[0])


# the group roles a login of each kind must not be a member of too
CONFLICTS: dict[Kind, tuple[str, ...]] = {
    "tenant": ("inferledger_reader", "inferledger_writer"),
    "reader": ("inferledger_tenant",),
    "writer": ("inferledger_tenant",),
}


def _refuse_existing(
    cur: Any, role: str, info: dict[str, Any], kind: Kind, tenant: str | None
) -> None:
    """What an existing role must not be, to become a login of ``kind``."""
    if info["super"]:
        raise RoleError(f"{role!r} is a superuser: it reads and writes everything already")
    for group in CONFLICTS[kind]:
        if _member_of(cur, role, group):
            raise RoleError(f"{role!r} is a member of {group}: revoke it first")
    if kind == "writer":
        return
    if info["createrole"]:
        raise RoleError(f"{role!r} has CREATEROLE: it could grant itself any group role")
    if kind == "reader":
        return
    if info["bypassrls"]:
        raise RoleError(f"{role!r} has BYPASSRLS: row-level security would not apply to it")
    # the owner of the ledger's tables is not subject to row-level security
    cur.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        "AND pg_has_role(%s, c.relowner, 'USAGE') LIMIT 1",
        (info["oid"],),
    )
    owned = cur.fetchone()
    if owned is not None:
        raise RoleError(f"{role!r} owns (or has the privileges of the owner of) {owned[0]}: "
                        "row-level security would not apply to it")  # fmt: skip
    # a login that can SET ROLE to another tenant's login (or the reverse) reads its rows
    cur.execute(
        "SELECT t.role_name, t.tenant_id FROM tenant_logins t "
        "JOIN pg_roles r ON r.rolname = t.role_name "
        "WHERE t.tenant_id <> %(tenant)s AND r.oid <> %(oid)s "
        "AND (pg_has_role(%(oid)s, r.oid, 'MEMBER') OR pg_has_role(r.oid, %(oid)s, 'MEMBER')) "
        "LIMIT 1",
        {"tenant": tenant, "oid": info["oid"]},
    )
    linked = cur.fetchone()
    if linked is not None:
        raise RoleError(
            f"{role!r} and {linked[0]!r} (a login of tenant {linked[1]!r}) are members one of "
            "the other: each could read the other's rows"
        )


def _only_group_privileges(cur: Any, role: str, group: str) -> None:
    """After a grant: the login can do nothing in this schema that its group cannot (another
    membership, a grant to PUBLIC or to the login itself would give a tenant more)."""
    cur.execute(
        """
        SELECT c.relname, p.priv, NULL
        FROM pg_class c
        CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                'REFERENCES', 'TRIGGER']) AS p(priv)
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND has_table_privilege(%(role)s, c.oid, p.priv)
          AND NOT has_table_privilege(%(group)s, c.oid, p.priv)
        UNION ALL
        SELECT c.relname, p.priv, a.attname
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) AS p(priv)
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND has_column_privilege(%(role)s, c.oid, a.attnum, p.priv)
          AND NOT has_column_privilege(%(group)s, c.oid, a.attnum, p.priv)
        UNION ALL
        SELECT current_schema(), 'CREATE', NULL
        WHERE has_schema_privilege(%(role)s, current_schema(), 'CREATE')
        LIMIT 1
        """,
        {"role": role, "group": group},
    )
    extra = cur.fetchone()
    if extra is not None:
        what = f"{extra[0]}.{extra[2]}" if extra[2] else extra[0]
        raise RoleError(
            f"{role!r} would have {extra[1]} on {what}, which {group} has not (a grant to "
            "PUBLIC, to the role or to another of its roles): nothing was changed"
        )


def grant(
    engine: Engine,
    kind: Kind,
    role: str,
    tenant: str | None = None,
    password: str | None = None,
) -> Outcome:
    """Make ``role`` a login of ``kind`` (creating it if missing): LOGIN, the password if
    given, membership of the group role, and for a tenant its binding in ``tenant_logins``.
    Idempotent; one transaction (nothing changes on a refusal)."""
    role = check_role_name(role)
    if kind == "tenant":
        if tenant is None:
            raise RoleError("a tenant login needs its tenant")
        tenant = check_tenant(tenant)
    if password is not None and not password:
        raise RoleError("the password must not be empty")
    group = GROUPS[kind]
    out = Outcome(role, kind, tenant)
    ident = sql.Identifier(role)
    with engine.begin() as conn:
        pg = _driver(conn)
        cur = pg.cursor()
        info = _prepare(cur, role)
        bound = _binding(cur, role)
        if kind == "tenant" and bound is not None and bound != tenant:
            raise RoleError(f"{role!r} is bound to tenant {bound!r}: revoke it first")
        if kind != "tenant" and bound is not None:
            raise RoleError(f"{role!r} is a login of tenant {bound!r}: revoke it first")
        if info is None:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            out.created = True
            out.done.append("created, LOGIN")
        else:
            _refuse_existing(cur, role, info, kind, tenant)
            if not info["login"]:
                out.done.append("LOGIN enabled")
            cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident))
        if password is not None:
            verifier = pg.pgconn.encrypt_password(
                password.encode(), role.encode(), b"scram-sha-256"
            ).decode()
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
            out.password_set = True
            out.done.append("password set")
        if not _member_of_directly(cur, role, group):
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))
            out.done.append(f"member of {group}")
        if kind == "tenant" and bound is None:
            cur.execute(
                "INSERT INTO tenant_logins (role_name, tenant_id) VALUES (%s, %s)", (role, tenant)
            )
            out.done.append(f"bound to tenant {tenant}")
        if kind != "writer":
            _only_group_privileges(cur, role, group)
    if out.created and password is None:
        out.warnings.append(
            "no password set: the role logs in only where pg_hba.conf needs none (trust, peer, "
            "cert); give one with --password-env or --password-prompt"
        )
    return out


def _member_of_directly(cur: Any, role: str, group: str) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT FROM pg_auth_members m "
        "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member "
        "WHERE g.rolname = %s AND r.rolname = %s)",
        (group, role),
    )
    return bool(cur.fetchone()[0])


def revoke(engine: Engine, role: str) -> Outcome:
    """Remove ``role``'s binding to a tenant, its memberships of the three group roles, and its
    LOGIN. The role itself stays: it may own objects or be used in other databases (DROP ROLE
    it yourself once it is unused). Sessions open as the role keep running, without the
    privileges: their next query is refused."""
    role = check_role_name(role)
    out = Outcome(role)
    ident = sql.Identifier(role)
    with engine.begin() as conn:
        cur = _driver(conn).cursor()
        info = _prepare(cur, role)
        cur.execute("DELETE FROM tenant_logins WHERE role_name = %s RETURNING tenant_id", (role,))
        unbound = cur.fetchone()
        if unbound is not None:
            out.tenant = str(unbound[0])
            out.done.append(f"unbound from tenant {out.tenant}")
        if info is None:
            if unbound is None:
                raise RoleError(f"there is no role {role!r}")
            out.warnings.append("there is no such role (a binding was left when it was dropped)")
            return out
        if info["super"]:
            raise RoleError(f"{role!r} is a superuser: not changed")
        for group in GROUPS.values():
            if _member_of_directly(cur, role, group):
                cur.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), ident))
                out.done.append(f"no longer a member of {group}")
        if info["login"]:
            out.done.append("LOGIN disabled")
        cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        for group in GROUPS.values():
            if _member_of(cur, role, group):
                out.warnings.append(
                    f"still a member of {group} through another role (revoke that membership)"
                )
    return out


def logins(engine: Engine) -> list[dict[str, Any]]:
    """Every role that is a member of a group role or bound to a tenant, with its group roles,
    its tenant and whether it may log in."""
    with engine.connect() as conn:
        cur = _driver(conn).cursor()
        cur.execute(
            """
            WITH members AS (
                SELECT r.rolname AS role, g.rolname AS grp
                FROM pg_auth_members m
                JOIN pg_roles r ON r.oid = m.member
                JOIN pg_roles g ON g.oid = m.roleid
                WHERE g.rolname = ANY(%s)
            ), names AS (
                SELECT role FROM members UNION SELECT role_name FROM tenant_logins
            )
            SELECT n.role,
                   coalesce((SELECT string_agg(grp, ' ' ORDER BY grp) FROM members m
                             WHERE m.role = n.role), '') AS groups,
                   t.tenant_id,
                   coalesce(r.rolcanlogin, false) AS login,
                   r.oid IS NOT NULL AS exists
            FROM names n
            LEFT JOIN tenant_logins t ON t.role_name = n.role
            LEFT JOIN pg_roles r ON r.rolname = n.role
            ORDER BY t.tenant_id NULLS FIRST, n.role
            """,
            (list(GROUPS.values()),),
        )
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
