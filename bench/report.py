"""The benchmark's report as Markdown (bench/results/*.md and latest.md)."""

from __future__ import annotations

from typing import Any


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# inferledger benchmark, {report['started_at']}",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, "
        f"commit {m['commit']}; broker {report['broker']}.",
        "",
        "| case | events | msgs | events/msg | raw ceiling ev/s | pipeline ev/s | ratio |"
        " plain faust ev/s (ratio to raw) | plain faust msgs/s | pipeline msgs/s |"
        " ratio to faust | ledger rows/s | peak RSS MB (attribution / ledger) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        p = c["pipeline"]
        rss = p["peak_rss_mb"]
        raw, faust = c["raw_ceiling"], c["faust_baseline"]
        lines.append(
            f"| {c['case']} | {c['events']:,} | {c['messages']:,} | "
            f"{c['events'] / c['messages']:,.1f} | "
            f"{raw['events_per_s']:,.0f} | {p['events_per_s']:,.0f} | "
            f"{p['ratio_to_raw_events_per_s']:.1%} | "
            f"{faust['events_per_s']:,.0f} ({faust['events_per_s'] / raw['events_per_s']:.1%}) | "
            f"{faust['messages_per_s']:,.0f} | {p['messages_per_s']:,.0f} | "
            f"{p['ratio_to_faust_messages_per_s']:.1%} | {p['ledger_rows_per_s']:,.0f} | "
            f"{rss.get('attribution', '?')} / "
            f"{rss.get('ledger', '?')} |"
        )
    lines.append(
        "\n| case | events/msg | pipeline ev/s of plain faust ev/s | CPU µs per event: pipeline |"
        " attribution / ledger / broker / Postgres | CPU s |\n|---|---|---|---|---|---|"
    )
    for c in report["cases"]:
        cpu = c.get("cpu_per_event")
        if cpu:
            per = cpu["us_per_event"]
            parts = " / ".join(
                str(per.get(k, "?")) for k in ("attribution", "ledger", "broker", "postgres")
            )
            lines.append(
                f"| {c['case']} | {c['events'] / c['messages']:,.1f} | "
                f"{c['pipeline'].get('ratio_to_faust_events_per_s', 0):.1%} | "
                f"{cpu['pipeline_us_per_event']} | {parts} | {cpu['pipeline_cpu_seconds']} |"
            )
    workers = [(c["case"], w) for c in report["cases"] for w in c.get("workers", [])]
    if workers:
        lines.append(
            "\n| case | attribution worker | events partitions | events processed |"
            " CPU s, first message to last row | CPU µs per event | CPU s, whole process |"
            " peak RSS MB |\n|---|---|---|---|---|---|---|---|"
        )
        for case, w in workers:
            per_event = w["cpu_us_per_event"]
            lines.append(
                f"| {case} | {w['worker']} | {','.join(map(str, w['partitions']))} | "
                f"{w['events_processed']:,} | {w['cpu_seconds_measured']} | "
                f"{'?' if per_event is None else per_event} | {w['cpu_seconds']} | "
                f"{w['peak_rss_mb']} |"
            )
    cap = report.get("ledger_write_capacity")
    if cap:
        lines.append(
            f"\nLedger writer transaction fed directly: {cap['rows']:,} rows in batches "
            f"of {cap['batch']:,}: {cap['rows_per_s']:,.0f} rows/s"
            + (
                f"; CPU per row: writer {cap['writer_cpu_us_per_row']} µs, Postgres "
                f"{cap['postgres_cpu_us_per_row']} µs"
                if "writer_cpu_us_per_row" in cap
                else ""
            )
        )
    lat = report.get("streaming")
    if lat:
        lines.append(
            f"\nStreaming, {lat.get('achieved_offer_events_per_s', '?')} events/s offered for "
            f"{lat.get('seconds')} s (W = {lat.get('bucket_seconds')} s, lateness "
            f"{lat.get('allowed_lateness_seconds')} s): latency beyond what the design makes a "
            f"bucket wait, over {lat['buckets']} buckets: p50 {lat.get('p50_s')} s, "
            f"p99 {lat.get('p99_s')} s, max {lat.get('max_s')} s"
        )
    for c in report["cases"]:
        for which, tenths in c["pipeline"].get("rss_mb_by_tenth", {}).items():
            lines.append(
                f"\n{c['case']}, {which} resident MB in each tenth of the run: "
                + " ".join(str(x) for x in tenths)
            )
    for c in report["cases"]:
        for which, shares in c.get("time_share", {}).items():
            if shares:
                parts = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
                lines.append(f"\n{c['case']}, {which} process time: {parts}")
    return "\n".join(lines) + "\n"
