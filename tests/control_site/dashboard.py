"""A person at the dashboard: signed in, in a real headless Chromium or a plain HTTP client.

Every page of the control site needs a signed-in user; these helpers sign in as a
person does (the sign-in form) so the tests read what that person sees.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from browser import Chromium, Page

from twin.control_site.logins import Users
from twin.control_site.serve import ControlSite
from twin.journal import Journal, read_events
from twin.telemetry.broker import BrokerConfig
from twin.telemetry.fleet import load_events
from twin.telemetry.state import BatchState

USER, PASSWORD = "alice", "s3cret"
CSRF = re.compile(r"name='csrf' value='([^']+)'")


def users_file(directory: Path, *people: tuple[str, str]) -> Path:
    """A control-site users file with alice (and whoever else is given)."""
    path = directory / "control-users"
    lines = [Users.line(name, password) for name, password in [(USER, PASSWORD), *people]]
    path.write_text("".join(line + "\n" for line in lines))
    return path


async def started_site(broker: BrokerConfig, tmp_path: Path, port: int) -> ControlSite:
    """A control site on 127.0.0.1:PORT: its SQLite store and users file in ``tmp_path``."""
    site = ControlSite(
        broker.url("control"), str(tmp_path / "cs.sqlite"), "127.0.0.1", port, users_file(tmp_path)
    )
    await site.start()
    return site


async def sign_in(
    browser: Chromium, base: str, path: str = "/", user: str = USER, password: str = PASSWORD
) -> Page:
    """A tab signed in through the sign-in form, showing ``path``."""
    page = await browser.open(f"{base}/login?next={urllib.parse.quote(path, safe='')}")
    await page.evaluate(
        f"document.querySelector('input[name=user]').value={json.dumps(user)};"
        f"document.querySelector('input[name=password]').value={json.dumps(password)};"
        "document.querySelector('form').submit(); true"
    )
    await page.wait_for(
        f"location.pathname === {json.dumps(path.split('?')[0])} && "
        "document.readyState === 'complete'"
    )
    return page


async def page_html(base: str, path: str) -> str:
    """The page at ``path`` as a signed-in Chromium renders it (its DOM, serialised)."""
    async with Chromium() as browser:
        page = await sign_in(browser, base, path)
        return str(await page.evaluate("document.documentElement.outerHTML"))


async def screenshot(page: Page, path: Path, width: int = 1400, height: int | None = None) -> bytes:
    """A PNG of the page at ``width``: all of it, or the top ``height`` pixels (a dialog)."""
    full = int(await page.evaluate("document.documentElement.scrollHeight"))
    tall = min(full, 8000) if height is None else height
    await page.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": tall, "deviceScaleFactor": 1, "mobile": False},
    )
    shot = await page.call("Page.captureScreenshot", {"format": "png"})
    data = base64.b64decode(shot["data"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


class Person:
    """A signed-in HTTP client (no browser): cookies, the page's CSRF token, forms."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""

    def _open(self, request: urllib.request.Request) -> tuple[int, str, str]:
        try:
            with self.opener.open(request, timeout=30) as response:
                text = response.read().decode()
                status, url = response.status, response.url
        except urllib.error.HTTPError as exc:
            text, status, url = exc.read().decode(), exc.code, exc.url
        found = CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return status, urllib.parse.urlsplit(url).path, text

    def get(self, path: str) -> tuple[int, str, str]:
        """Status, final path (redirects followed) and text of a GET."""
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, form: dict[str, str], csrf: bool = True) -> tuple[int, str, str]:
        data = {**({"csrf": self.csrf} if csrf else {}), **form}
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(self.base + path, data=body, method="POST"))

    def sign_in(self, user: str = USER, password: str = PASSWORD) -> tuple[int, str, str]:
        return self.post("/login", {"user": user, "password": password}, csrf=False)

    def get_as_program(
        self, path: str, user: str = USER, password: str = PASSWORD
    ) -> tuple[int, str, str]:
        """A GET as a machine client makes it: HTTP Basic credentials, no session."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(self.base + path)
        request.add_header("Authorization", f"Basic {token}")
        return self._open(request)


def page_as_supervisor(path: str) -> Callable[[str], str]:
    """Steps for ``served``: the default supervisor signs in and reads the page at ``path``."""

    def steps(base: str) -> str:
        person = Person(base)
        person.sign_in()
        return person.get(path)[2]

    return steps


Message = tuple[str, str, str, str, dict[str, Any]]


def copy_batch(
    recorded: Path,
    dest: Path,
    batch_id: str,
    *,
    upto: int | None = None,
    extra: Sequence[tuple[float, str, str, dict[str, Any]]] = (),
) -> Path:
    """A new journal for ``batch_id`` from a recorded batch's events (the first ``upto``),
    then ``extra`` events (batch time, kind, source, data), chained as a batch writes them."""
    clock = {"t": 0.0}
    journal = Journal(dest, lambda: clock["t"], signer=None)
    for batch_time, kind, source, data in [*load_events(recorded)[:upto], *extra]:
        clock["t"] = batch_time
        if kind == "batch_started":
            data = {**data, "batch_id": batch_id}
        journal.append(kind, source, data)
    journal.close()
    return dest


def messages_of(
    journal: Path, site: str, unit: str, batch: str, *, skip: Sequence[int] = ()
) -> list[Message]:
    """What the site's forwarder publishes for the journal: its events, then its state."""
    state = BatchState(batch)
    out: list[Message] = []
    for e in read_events(journal):
        state.apply(e)
        if e.seq in skip:
            continue
        body = {
            "seq": e.seq,
            "batch_time": e.batch_time,
            "wall_time": e.wall_time,
            "kind": e.kind,
            "source": e.source,
            "data": e.data,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }
        out.append((site, unit, batch, "event", body))
    out.append((site, unit, batch, "state", state.as_payload()))
    return out


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


async def shown_in(page: Page, selector: str, size: tuple[int, int], containing: str = "") -> str:
    """The text of the first element matching ``selector`` (and holding ``containing``) if it
    is drawn inside a screenshot of ``size`` (page coordinates); fails if it is missing,
    empty or outside."""
    box = await page.evaluate(
        f"(() => {{const e = [...document.querySelectorAll({json.dumps(selector)})]"
        f".find(e => e.textContent.includes({json.dumps(containing)}));"
        "if (!e) return null; const r = e.getBoundingClientRect();"
        "return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,"
        " text: e.textContent};})()"
    )
    assert box is not None, f"{selector} ({containing!r}): not on the page"
    assert box["w"] > 0 and box["h"] > 0, f"{selector}: not drawn"
    inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["w"] <= size[0] + 1
    assert inside and box["y"] + box["h"] <= size[1] + 1, f"{selector}: outside the screenshot"
    return str(box["text"])
