"""Headless Chromium driven over the Chrome DevTools Protocol (aiohttp's websocket client: no
new dependency), for the tests that look at a page the way a person's browser shows it.

:func:`chromium` finds the browser, installing the Debian package ``chromium`` where it is
missing (a missing browser is an error, never a skip). :func:`inspect_page` loads a page at a
window width, collects console messages, uncaught exceptions, browser log errors (a Content-
Security-Policy violation, a failed load) and every network request, evaluates expressions,
and takes a full-page screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


def chromium() -> str:
    """The path of the ``chromium`` binary; installs the Debian package where it is missing
    (as root, or through passwordless sudo). Fails loudly when it cannot."""
    found = shutil.which("chromium")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = []
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        proc = subprocess.run(
            prefix + cmd, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        log.append(f"$ {' '.join(prefix + cmd)} -> {proc.returncode}\n{proc.stderr[-2000:]}")
    found = shutil.which("chromium")
    if not found:
        raise AssertionError(
            "headless Chromium is needed and could not be installed (apt-get install chromium):\n"
            + "\n".join(log)
        )
    return found


@dataclass
class PageResult:
    """What the browser saw: console messages of level error or warning, uncaught exceptions,
    browser log entries of level error, the URLs requested, and the values evaluated."""

    console: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return self.console + self.exceptions + self.log_errors + self.dialogs


class _Cdp:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            self.events.append(data)
            for method, waiter in list(self.waiters):
                if data.get("method") == method and not waiter.done():
                    waiter.set_result(data)

    async def send(self, method: str, session: str | None = None, **params: Any) -> Any:
        n = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        msg: dict[str, Any] = {"id": n, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.send_str(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise AssertionError(f"CDP {method}: {reply['error']}")
        return reply.get("result", {})

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.append((method, fut))
        return fut


def _start(binary: str, profile: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            binary, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1)
        if len(seen) > 200:
            break
    proc.kill()
    raise AssertionError("chromium did not start:\n" + "".join(seen[-40:]))


def inspect_page(
    url: str,
    widths: tuple[int, ...] = (1280,),
    expressions: dict[str, str] | None = None,
    screenshot: Path | None = None,
    height: int = 900,
) -> dict[int, PageResult]:
    """Load ``url`` once per window width in headless Chromium; per width, what the browser
    saw and ``expressions`` evaluated (JSON values). ``screenshot``: a full-page PNG at the
    first width."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="il-chromium-") as profile:
        proc, ws_url = _start(binary, profile)
        try:
            return asyncio.run(
                asyncio.wait_for(
                    _inspect(ws_url, url, widths, expressions or {}, screenshot, height), 180
                )
            )
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def _inspect(
    ws_url: str,
    url: str,
    widths: tuple[int, ...],
    expressions: dict[str, str],
    screenshot: Path | None,
    height: int,
) -> dict[int, PageResult]:
    out: dict[int, PageResult] = {}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, max_msg_size=0) as ws,
    ):
        cdp = _Cdp(ws)
        try:
            for n, width in enumerate(widths):
                target = await cdp.send("Target.createTarget", url="about:blank")
                attached = await cdp.send(
                    "Target.attachToTarget", targetId=target["targetId"], flatten=True
                )
                session = attached["sessionId"]
                for domain in ("Runtime", "Log", "Page", "Network"):
                    await cdp.send(f"{domain}.enable", session)
                await cdp.send(
                    "Emulation.setDeviceMetricsOverride", session,
                    width=width, height=height, deviceScaleFactor=1, mobile=False,
                )  # fmt: skip
                first_event = len(cdp.events)
                loaded = cdp.expect("Page.loadEventFired")
                await cdp.send("Page.navigate", session, url=url)
                await asyncio.wait_for(loaded, 60)
                await asyncio.sleep(0.3)  # late console messages
                result = PageResult()
                for name, expr in expressions.items():
                    got = await cdp.send(
                        "Runtime.evaluate", session, expression=expr, returnByValue=True
                    )
                    if "exceptionDetails" in got:
                        raise AssertionError(f"{name}: {got['exceptionDetails']}")
                    result.values[name] = got["result"].get("value")
                if screenshot is not None and n == 0:
                    metrics = await cdp.send("Page.getLayoutMetrics", session)
                    size = metrics["cssContentSize"]
                    shot = await cdp.send(
                        "Page.captureScreenshot", session, format="png",
                        captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": width, "height": size["height"],
                              "scale": 1},
                    )  # fmt: skip
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                for ev in cdp.events[first_event:]:
                    if ev.get("sessionId") != session:
                        continue
                    _record(result, ev)
                out[width] = result
                await cdp.send("Target.closeTarget", targetId=target["targetId"])
        finally:
            cdp.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cdp.reader
    return out


def _record(result: PageResult, ev: dict[str, Any]) -> None:
    method, params = ev.get("method"), ev.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in (
        "error",
        "warning",
        "assert",
    ):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        result.console.append(f"console.{params['type']}: {args}")
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        result.exceptions.append(
            str(details.get("exception", {}).get("description") or details.get("text"))
        )
    elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
        entry = params["entry"]
        result.log_errors.append(f"{entry.get('source')}: {entry.get('text')}")
    elif method == "Network.requestWillBeSent":
        result.requests.append(params["request"]["url"])
    elif method == "Page.javascriptDialogOpening":
        result.dialogs.append(f"dialog: {params.get('message')}")
