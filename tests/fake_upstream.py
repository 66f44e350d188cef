"""An OpenAI-compatible serving engine for tests (what vLLM or SGLang answer), on aiohttp.

    python -m tests.fake_upstream PORT

Models: any name answers; ``broken`` answers 500; ``slow`` streams 100 chunks 50 ms apart.
Usage reports 4 cached prompt tokens, as vLLM does with prefix caching. With
``FAKE_UPSTREAM_ID`` set (even to the empty string), every answer carries that response id, as
a misbehaving engine or a gateway in front of one may do.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from aiohttp import web


def usage(prompt: str, completion_tokens: int) -> dict[str, Any]:
    prompt_tokens = max(len(prompt.split()), 5)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


async def complete(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    chat = request.path.endswith("/chat/completions")
    model = body["model"]
    if model == "broken":
        return web.json_response({"error": {"message": "engine failed", "code": 500}}, status=500)
    prompt = (
        " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        if chat
        else str(body.get("prompt", ""))
    )
    words = ["tok"] * int(body.get("max_tokens") or 6)
    if model == "slow":
        words = ["tok"] * 100
    rid = os.environ.get("FAKE_UPSTREAM_ID", f"cmpl-{time.time_ns()}")
    kind = "chat.completion" if chat else "text_completion"
    if not body.get("stream"):
        text = " ".join(words)
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        return web.json_response(
            {
                "id": rid,
                "object": kind,
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage(prompt, len(words)),
            }
        )
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    delay = 0.05 if model == "slow" else 0.005
    for n, w in enumerate(words):
        await asyncio.sleep(delay)
        choice = (
            {"index": 0, "delta": {"content": w + " "}, "finish_reason": None}
            if chat
            else {"index": 0, "text": w + " ", "finish_reason": None}
        )
        chunk = {
            "id": rid,
            "object": f"{kind}.chunk" if chat else kind,
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
        }
        await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if n == 0:
            await asyncio.sleep(0.02)
    if (body.get("stream_options") or {}).get("include_usage"):
        last = {
            "id": rid,
            "object": f"{kind}.chunk" if chat else kind,
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage(prompt, len(words)),
        }
        await out.write(f"data: {json.dumps(last)}\n\n".encode())
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "any", "object": "model"}]})


def app() -> web.Application:
    a = web.Application()
    a.router.add_post("/v1/chat/completions", complete)
    a.router.add_post("/v1/completions", complete)
    a.router.add_get("/v1/models", models)
    return a


if __name__ == "__main__":
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
