"""A plain faust agent that only decodes: the per-message ceiling of faust on this machine.

    python -m bench.faust_baseline MESSAGES

It consumes the events topic of ``INFERLEDGER_TOPIC_PREFIX`` with the same app factory (and so
the same consumer settings) as the pipeline, ``json.loads`` every message, and prints one JSON
line with the time from its first message to its ``MESSAGES``-th.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from services.runtime.config import EVENTS, load_settings
from services.runtime.faustapp import make_app, run_until


def main() -> None:
    expected = int(sys.argv[1])
    settings = load_settings()
    app = make_app(settings, settings.group(f"bench-faust-baseline-{time.time_ns()}"))
    done = asyncio.Event()
    seen = {"messages": 0, "events": 0, "first": 0.0, "last": 0.0}

    @app.agent(app.topic(settings.topic(EVENTS)))
    async def decode(stream: Any) -> None:
        async for value in stream:
            doc = json.loads(value)
            if not seen["messages"]:
                seen["first"] = time.time()
            seen["messages"] += 1
            seen["events"] += len(doc["events"]) if "events" in doc else 1
            if seen["messages"] >= expected:
                seen["last"] = time.time()
                done.set()

    asyncio.run(run_until(app, done))
    seconds = seen["last"] - seen["first"]
    print(
        json.dumps(
            {
                "messages": seen["messages"],
                "events": seen["events"],
                "seconds": round(seconds, 3),
                "messages_per_s": round(seen["messages"] / seconds, 1),
                "events_per_s": round(seen["events"] / seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
