"""How far the ledger has come: small counts for progress lines and summaries."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, create_engine, text

from services.runtime.config import Settings


def ledger_rows(settings: Settings) -> int:
    """Rows in ``ledger_entries`` now (0 when the database is not reachable or not set up)."""
    if not settings.database_url:
        return 0
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one())
    except Exception:
        return 0
    finally:
        engine.dispose()


def progress_line(settings: Settings) -> str:
    """A progress line for the supervisor: ``1234 ledger rows``."""
    return f"{ledger_rows(settings)} ledger rows"


def ledger_total(engine: Engine) -> Decimal:
    """The sum of every ledger entry's amount (all currencies together)."""
    with engine.connect() as conn:
        return Decimal(
            conn.execute(text("SELECT coalesce(sum(amount), 0) FROM ledger_entries")).scalar_one()
        )


def unallocated_summary(engine: Engine) -> str:
    """``n x reason (cost)`` per reason of ``v_unallocated_billing``, or ``none``."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT reason, count(*), sum(cost) FROM v_unallocated_billing GROUP BY reason")
        )
        return ", ".join(f"{n} x {reason} ({cost})" for reason, n, cost in rows) or "none"
