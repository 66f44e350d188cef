"""``inferledger dlq list|replay``: what was rejected and why, and sending fixed messages back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from services.cli.common import INPUT_FILE, require_broker, settings_of
from services.runtime.config import Settings
from services.runtime.stack import local_stack

if TYPE_CHECKING:
    from services.ingest.dlq import DeadLetter


@click.group()
def dlq() -> None:
    """Dead letters: list what was rejected and why, and send fixed messages back."""


_DLQ_TOPICS = click.Choice(["inference-events", "gpu-rates", "gpu-billing", "cost-allocations"])


def _dlq_records(
    s: Settings, topics: tuple[str, ...], reason: str | None, source: str | None
) -> Iterator[DeadLetter]:
    from services.ingest import dlq as d

    return (r for r in d.read(s, d.dlq_topics(s, topics or None)) if d.matches(r, reason, source))


@dlq.command("list")
@click.option("--topic", "topics", type=_DLQ_TOPICS, multiple=True, help="default: all")
@click.option("--reason", default=None, help="only this reason (e.g. invalid, too_late)")
@click.option("--source", default=None, help="only from this component (gateway, ingest, ...)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most N records")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table")
@click.pass_context
def dlq_list(
    ctx: click.Context,
    topics: tuple[str, ...],
    reason: str | None,
    source: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Show dead letters (oldest first) and how many there are per reason."""
    from collections import Counter

    require_broker(settings_of(ctx), "dlq list")
    with local_stack(settings_of(ctx), need_database=False) as s:
        from services.runtime.kafka import ensure_topics

        ensure_topics(s)
        by_reason: Counter[str] = Counter()
        shown = 0
        if fmt == "table":
            click.echo(
                f"{'at':<32} {'source':<12} {'topic':<18} {'reason':<22} {'bytes':>8}  detail"
            )
        for r in _dlq_records(s, topics, reason, source):
            by_reason[f"{r.topic.removeprefix(s.topic_prefix)}/{r.reason}"] += 1
            if limit is not None and shown >= limit:
                continue
            shown += 1
            if fmt == "jsonl":
                click.echo(json.dumps(r.as_dict()))
                continue
            size = f"{r.record.get('payload_size', '?')}{'T' if r.truncated else ''}"
            click.echo(
                f"{str(r.record.get('rejected_at', ''))[:32]:<32} {r.source[:12]:<12} "
                f"{r.topic.removeprefix(s.topic_prefix)[:18]:<18} {r.reason[:22]:<22} "
                f"{size:>8}  {' '.join(str(r.record.get('detail', '')).split())[:100]}"
            )
        click.echo(
            json.dumps({"dead_letters": sum(by_reason.values()), "by_reason": dict(by_reason)}),
            err=True,
        )


@dlq.command("replay")
@click.option("--topic", "topics", type=_DLQ_TOPICS, multiple=True, help="default: all")
@click.option("--reason", default=None, help="only dead letters with this reason")
@click.option("--source", default=None, help="only dead letters from this component")
@click.option("--all", "everything", is_flag=True, help="every dead letter (no filter)")
@click.option(
    "--from-file",
    "from_file",
    type=INPUT_FILE,
    default=None,
    help="JSONL of fixed messages (- for stdin): dead-letter records from `dlq list "
    "--format jsonl` with their payload fixed, or plain messages for the one --topic",
)
@click.option(
    "--record",
    "records",
    multiple=True,
    help="only this dead letter, TOPIC:PARTITION:OFFSET (dlq_topic, dlq_partition, dlq_offset "
    "of `dlq list --format jsonl`); repeatable",
)
@click.option(
    "--include-unauthorized",
    is_flag=True,
    help="send the --record dead letters even if the gateway's authorization refuses them now "
    "(unauthenticated, token gone, or out of its scope)",
)
@click.option("--dry-run", is_flag=True, help="validate and report, send nothing")
@click.pass_context
def dlq_replay(
    ctx: click.Context,
    topics: tuple[str, ...],
    reason: str | None,
    source: str | None,
    everything: bool,
    from_file: str | None,
    records: tuple[str, ...],
    include_unauthorized: bool,
    dry_run: bool,
) -> None:
    """Send dead-lettered payloads back to the topic they were rejected from.

    Each payload is validated first: one still invalid, or truncated, is reported and not
    sent. What the gateway dead-lettered is authorized again under the current gateway tokens
    (refused: unauthenticated, unknown_credential, forbidden) unless named with --record and
    --include-unauthorized. Events sent twice are counted once (event ids), and so are rates
    and bills."""
    from services.ingest import dlq as d
    from services.ingest.files import open_input
    from services.runtime.kafka import ensure_topics

    if from_file is None and not (reason or source or everything or records):
        raise click.UsageError(
            "choose what to replay: --reason, --source, --all, --record or --from-file"
        )
    if from_file is not None and len(topics) > 1:
        raise click.UsageError("--from-file takes at most one --topic (for plain messages)")
    if include_unauthorized and (not records or from_file is not None):
        raise click.UsageError("--include-unauthorized needs the dead letters named by --record")
    if from_file is None or not dry_run:  # a dry run of a file only validates it
        require_broker(settings_of(ctx), "dlq replay")
    with local_stack(settings_of(ctx), need_database=False) as s:
        ensure_topics(s)
        if from_file is not None:
            with open_input(from_file) as stream:
                result = d.send(s, d.from_file(stream, s, topics[0] if topics else None), dry_run)
        else:
            try:
                named = {d.parse_position(s, r) for r in records} or None
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--record") from None
            chosen = (
                r
                for r in _dlq_records(s, topics, reason, source)
                if named is None or (r.dlq_topic, r.dlq_partition, r.dlq_offset) in named
            )
            result = d.send(s, d.from_records(chosen, include_unauthorized), dry_run)
    for problem in result.problems[:50]:
        click.echo(f"not sent: {problem}", err=True)
    click.echo(json.dumps({**result.as_dict(), "dry_run": dry_run}))
