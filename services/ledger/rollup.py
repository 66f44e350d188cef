"""The daily rollup ``ledger_daily`` (migration 0008): what one group of journal rows adds to it.

Migration 0008 keeps its own copy of this expression (a migration is frozen history); the
audit's copy is this one, and ``tests/migrations`` holds the two equal."""

DAILY_SUMS = """(bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, tenant_id, model,
    currency, count(*) AS entries,
    count(*) FILTER (WHERE cost_basis = 'unpriced') AS unpriced_entries,
    count(*) FILTER (WHERE cost_basis = 'billed') AS billed_entries,
    sum(completions) AS completions, sum(failed_requests) AS failed_requests,
    sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(work_units) AS work_units,
    sum(busy_seconds) AS busy_seconds, sum(amount) AS amount"""
