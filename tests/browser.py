"""A real headless Chromium, driven over the DevTools protocol (aiohttp's websocket client).

``--dump-dom`` shows a page once; a dashboard that updates itself has to be
watched while it is open. No Playwright or Selenium here: Chromium's own
DevTools endpoint is enough to open pages and read their DOM as it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from twin.clock import wall_monotonic


class Page:
    """One open tab: evaluate JavaScript in it, wait until an expression holds."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One DevTools command on this tab; its result."""
        call_id = next(self._ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self.ws:
            body = json.loads(message.data)
            if body.get("id") == call_id:
                if "error" in body:
                    raise AssertionError(f"{method}: {body['error']}")
                result: dict[str, Any] = body.get("result", {})
                return result
        raise AssertionError("the browser closed the page")

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (JSON-able values only)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = await self.call("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def type(self, text: str) -> None:
        """Type ``text`` into the focused field, as a keyboard (or a barcode scanner) does."""
        await self.call("Input.insertText", {"text": text})

    async def press_enter(self) -> None:
        """A real Enter key press (trusted events: a form would submit on it)."""
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}
        await self.call("Input.dispatchKeyEvent", {"type": "keyDown", **key})
        await self.call("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy; its value (fails after ``timeout``)."""
        deadline = wall_monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert wall_monotonic() < deadline, f"timed out waiting for: {expression}"
            await asyncio.sleep(0.1)  # real time: the page polls its server on its own


class Chromium:
    """``async with Chromium() as browser: page = await browser.open(url)``."""

    def __init__(self) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        assert binary, "chromium is not installed: run 'make system-deps'"
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="poc-twin-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.port = 0

    async def __aenter__(self) -> Chromium:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        active = self.profile / "DevToolsActivePort"
        deadline = wall_monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            assert self.proc.poll() is None, "chromium exited at start"
            assert wall_monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.05)  # real time: waiting for the browser process
        self.port = int(active.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        return self

    async def open(self, url: str) -> Page:
        """A new tab on ``url``, once its document has loaded."""
        assert self.session is not None
        endpoint = f"http://127.0.0.1:{self.port}/json/new?{url}"
        async with self.session.put(endpoint) as response:
            target = await response.json(content_type=None)
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        await page.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")
        return page

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
