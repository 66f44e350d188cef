"""The daily rollup ``ledger_daily`` (migrations 0008 and 0011): what one group of journal rows
adds to it.

Migration 0011 (which added the goodput and waste sums to 0008's) keeps its own copy of this
expression (a migration is frozen history); the audit's copy is this one, and
``tests/migrations`` holds the two equal."""

DAILY_SUMS = """(bucket_start AT TIME ZONE 'UTC')::date AS day, resource_id, tenant_id, model,
    currency, count(*) AS entries,
    count(*) FILTER (WHERE cost_basis = 'unpriced') AS unpriced_entries,
    count(*) FILTER (WHERE cost_basis = 'billed') AS billed_entries,
    sum(completions) AS completions, sum(failed_requests) AS failed_requests,
    sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(work_units) AS work_units,
    sum(busy_seconds) AS busy_seconds, sum(amount) AS amount,
    sum(completions_within_slo) AS completions_within_slo,
    sum(cancelled_requests) AS cancelled_requests, sum(slo_miss_amount) AS slo_miss_amount,
    sum(failed_amount) AS failed_amount, sum(cancelled_amount) AS cancelled_amount"""
