"""The alerts processor: budgets evaluated against the ledger, alerts fired once and delivered."""
