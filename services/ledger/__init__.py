"""The ledger: Postgres schema, the idempotent batched writer, reports."""
